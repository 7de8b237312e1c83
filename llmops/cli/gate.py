"""Gate commands.

    llmops gate pr --base origin/main
    llmops gate baseline          # on main: store the baseline the PR gate compares with
"""

from __future__ import annotations

from pathlib import Path

import click

MODEL_OPTIONS = [
    click.option("--model", "model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
                 help="Model folder to test (default: registry production, else the local default model)."),
    click.option("--endpoint", metavar="URL", help="Test an OpenAI-compatible server that is already running."),
    click.option("--rows", default=16, show_default=True, help="Eval-split rows scored for ROUGE-L and token F1."),
]


def model_options(fn):
    for option in reversed(MODEL_OPTIONS):
        fn = option(fn)
    return fn


@click.group()
def gate() -> None:
    """Commit-level gates."""


@gate.command("pr")
@click.option("--base", default="origin/main", show_default=True, help="The ref the pull request merges into.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path(".llmops/reports/pr-gate"),
              show_default=True, help="Where report.json and report.md go.")
@click.option("--baseline", "baseline_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Compare with this report.json instead of the base ref's evals/baseline/report.json.")
@click.option("--allow-gate-changes", "override_reason", metavar="REASON",
              help="Accept this PR's changes to the gate itself (thresholds, cases, eval rows) as warnings, "
                   "recorded with REASON in the report. pr.yml passes it for the eval-gate-change label.")
@click.option("--override-label", metavar="LABEL",
              help="The pull-request label that granted --allow-gate-changes; report.md names it.")
@model_options
def pr(base: str, out_dir: Path, baseline_path: Path | None, override_reason: str | None,
       override_label: str | None, model_dir: Path | None, endpoint: str | None, rows: int) -> None:
    """Check what changed against BASE, run the rule-based evals, diff against main's baseline.

    Exit 0 on pass, 1 on a failed gate, 2 on bad input. report.md is the PR comment.
    """
    from llmops.errors import GateFailed, InputError
    from llmops.jobs.gate_changes import Override
    from llmops.jobs.pr_gate import run_pr_gate
    from llmops.settings import Settings

    if override_label is not None and override_reason is None:
        raise InputError("--override-label names what granted --allow-gate-changes; pass both", field="--override-label")
    override = Override(override_reason, override_label) if override_reason is not None else None
    settings = Settings.load()
    out = out_dir if out_dir.is_absolute() else settings.root / out_dir
    report = run_pr_gate(settings, base=base, out_dir=out, model_dir=model_dir, endpoint=endpoint,
                         baseline_path=baseline_path, rows=rows, override=override, echo=click.echo)
    _summary(report, out)
    if not report.passed:
        raise GateFailed(f"the PR gate failed; see {out / 'report.md'}")


@gate.command("baseline")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=Path("evals/baseline/report.json"),
              show_default=True, help="Where the baseline report goes (commit it on main).")
@model_options
def baseline(out_path: Path, model_dir: Path | None, endpoint: str | None, rows: int) -> None:
    """Run every case and the gate's eval rows on the model under test and store them as the baseline."""
    import tempfile

    from llmops.files import atomic_write_bytes
    from llmops.jobs.pr_gate import run_pr_gate
    from llmops.settings import Settings

    settings = Settings.load()
    with tempfile.TemporaryDirectory() as tmp:
        report = run_pr_gate(settings, base="", out_dir=Path(tmp), model_dir=model_dir, endpoint=endpoint,
                             all_cases=True, rows=rows, echo=click.echo)
        target = out_path if out_path.is_absolute() else settings.root / out_path
        atomic_write_bytes(target, (Path(tmp) / "report.json").read_bytes())
        atomic_write_bytes(target.with_suffix(".md"), (Path(tmp) / "report.md").read_bytes())
    _summary(report, target.parent)
    click.echo(f"baseline written: {target} (commit it on main)")


def _summary(report, out: Path) -> None:
    for name, m in sorted(report.metrics.items()):
        base = "-" if m.base is None else f"{m.base:.3f}"
        mark = {None: "", True: "ok", False: "REGRESSION"}[m.passed]
        click.echo(f"  {name:28} base {base:>6}  head {m.head:.3f}  {mark}")
    for check in report.checks:
        click.echo(f"  {'PASS' if check.passed else 'FAIL'} {check.name}: {len(check.findings)} findings")
    click.echo(f"verdict: {report.verdict.upper()}  report: {out / 'report.md'}")
