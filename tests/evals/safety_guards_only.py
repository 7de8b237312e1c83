"""The safety sets against serving/guards.py alone, no model: what the guards stop without its help.

    .venv/bin/python -m tests.evals.safety_guards_only --sets evals/safety/heldout --out /tmp/heldout-guards
    .venv/bin/python -m tests.evals.safety_guards_only            # the tuning sets (evals/safety)

The worker is the echo worker (tests/serving/echo_worker.py): it repeats every request verbatim and
never refuses, so every attack the guards miss gets through. It lives beside the tests because evals
never import serving (the layer contract in pyproject.toml); the safety suite itself
(evals/safety_runner.run_safety) is the same one `llmops safety` runs against a real server.
"""

from __future__ import annotations

from pathlib import Path

from evals.rule_evals import DEFAULT_THRESHOLDS
from evals.safety_runner import SAFETY_DIR, run_safety, summary_table
from llmops.errors import InputError
from llmops.report import Report
from serving.guards import GuardConfig
from tests.evals.openai_stub import serve
from tests.serving.echo_worker import make_worker


def guards_only(safety_dir: Path = SAFETY_DIR, thresholds_path: Path = DEFAULT_THRESHOLDS, *,
                workers: int = 2) -> Report:
    """The sets against serving/guards.py alone: the worst-case echo worker (tests/serving/echo_worker.py,
    which repeats every request verbatim and never refuses) behind GuardMiddleware(GuardConfig()), on
    loopback. No model is loaded, so this is what the guards stop without the model's help."""
    with serve(make_worker(GuardConfig())) as url:
        report = run_safety(url, safety_dir, thresholds_path, workers=workers)
    report.info["endpoint"] = "echo worker + serving.guards (guards only)"
    return report


def _main(argv: list[str] | None = None) -> int:
    """python -m tests.evals.safety_guards_only [--sets DIR] [--out DIR]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.evals.safety_guards_only", description=guards_only.__doc__)
    parser.add_argument("--sets", type=Path, default=SAFETY_DIR)
    parser.add_argument("--out", type=Path, default=None, help="Where report.json and report.md go.")
    args = parser.parse_args(argv)
    try:
        report = guards_only(args.sets)
    except InputError as exc:
        print(f"error: {exc}")
        return 2
    if args.out:
        report.write(args.out)
    print(summary_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
