"""The safety gate: attack sets (evals/safety/) against an OpenAI-compatible endpoint or a served model folder.

    llmops safety --endpoint http://127.0.0.1:8000
    llmops safety --model .llmops/runs/export/v1 --out .llmops/reports/safety
    llmops safety --model .llmops/runs/export/v1 --heldout evals/safety/heldout   # tuning and held-out side by side

Prints the block rate per attack class and the false-alarm rate on the benign set, writes
report.json and report.md. Exit 0 when every rate is within evals/thresholds.yaml's `safety:`
limits, 1 on a breach (unless --no-gate), 2 for bad input (attack files, flags, an unreachable endpoint).
"""

from __future__ import annotations

from pathlib import Path

import click

from llmops.errors import GateFailed


@click.command("safety")
@click.option("--endpoint", metavar="URL", help="Root URL of an OpenAI-compatible server.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A model folder to serve on loopback (serving.app.running_server) and attack.")
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True,
              help="Serving backend for --model.")
@click.option("--model-name", default=None, help="The requests' `model` field (default: the server's first model).")
@click.option("--api-key", envvar="LLMOPS_EVAL_API_KEY", default=None, help="Bearer token (env LLMOPS_EVAL_API_KEY).")
@click.option("--sets", "safety_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of attack sets (default: evals/safety).")
@click.option("--heldout", "heldout_dir", type=click.Path(path_type=Path), default=None,
              help="Also run these held-out sets (e.g. evals/safety/heldout) in the same session: their rates are "
                   "reported and gated beside the tuning sets' as safety.heldout.*.")
@click.option("--class", "classes", multiple=True, help="Only these attack classes (the benign set always runs).")
@click.option("--thresholds", "thresholds_path", type=click.Path(path_type=Path), default=None,
              help="Gates file (default: evals/thresholds.yaml, section `safety:`).")
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True, help="Parallel requests.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where report.json and report.md go (default: .llmops/reports/safety).")
@click.option("--no-gate", is_flag=True, help="Report only: exit 0 even when a limit is breached.")
def safety(endpoint: str | None, model_dir: Path | None, backend: str, model_name: str | None,
           api_key: str | None, safety_dir: Path | None, heldout_dir: Path | None, classes: tuple[str, ...], thresholds_path: Path | None,
           workers: int, out_dir: Path | None, no_gate: bool) -> None:
    """Attack an endpoint with the safety sets; gate per-class block rates and the false-alarm rate."""
    from evals.rule_evals import DEFAULT_THRESHOLDS
    from evals.safety_runner import SAFETY_DIR, add_heldout, run_safety, summary_table
    from llmops.cli.endpoint import endpoint_or_served
    from llmops.settings import Settings

    settings = Settings.load()
    out_dir = out_dir or settings.home / "reports" / "safety"
    with endpoint_or_served(endpoint, model_dir, backend) as url:
        kwargs = {"api_key": api_key, "model": model_name, "classes": list(classes) or None, "workers": workers}
        report = run_safety(url, safety_dir or SAFETY_DIR, thresholds_path or DEFAULT_THRESHOLDS, **kwargs)
        if heldout_dir is not None:
            add_heldout(report, run_safety(url, heldout_dir, thresholds_path or DEFAULT_THRESHOLDS, **kwargs))
    if model_dir is not None:  # served here: say whether the guards were in front of it (LLMOPS_GUARDS)
        report.info.update(model_dir=str(model_dir), guards="on" if settings.guards else "off")
    json_path, md_path = report.write(out_dir)
    click.echo(summary_table(report))
    click.echo(f"wrote {json_path} and {md_path}")
    if not report.passed and not no_gate:
        breached = sorted(n for n, m in report.metrics.items() if m.passed is False)
        raise GateFailed(f"safety limits breached: {', '.join(breached)} (see {md_path})")
