"""Monitoring commands: drift of the serving profiles against training data and the previous window.

    llmops monitor report                         # last complete window vs training + previous; exit 1 on drift
    llmops monitor report --window 20261122T0000Z --out reports/drift
    llmops monitor profile-training               # (re)build the cached training-data profile
"""

from __future__ import annotations

from pathlib import Path

import click

from llmops.errors import GateFailed

EXIT_INCONCLUSIVE = 3  # 0 pass, 1 drift, 2 bad input
DEFAULT_TRAIN = "datasets/python-faq/train.jsonl"


@click.group()
def monitor() -> None:
    """whylogs profiles of serving traffic and drift reports (serving/monitoring/)."""


def _train_file(dataset: str) -> Path:
    from llmops.settings import Settings

    path = Path(dataset)
    if path.is_dir():
        path = path / "train.jsonl"
    if not path.is_absolute() and not path.exists():
        path = Settings.load().root / path
    return path


@monitor.command("report")
@click.option("--window", default=None,
              help="A complete window to judge, e.g. 20261122T0000Z (default: the last complete one).")
@click.option("--train", "dataset", default=DEFAULT_TRAIN, show_default=True,
              help="Training file (or dataset folder) whose questions/answers are the baseline.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Thresholds (default: serving/monitoring/drift.yaml).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports/drift"),
              show_default=True, help="Folder for report.json, report.md and report.html.")
@click.option("--metrics-file", type=click.Path(path_type=Path), default=None,
              help="Prometheus textfile (default: <home>/monitoring/metrics/drift.prom).")
def report_cmd(window: str | None, dataset: str, config_path: Path | None, out_dir: Path,
               metrics_file: Path | None) -> None:
    """Drift report of the last complete serving window.

    \b
    Exit codes:
      0  judged, no drift score above its threshold
      1  drift: a score above its threshold (serving/monitoring/drift.yaml)
      2  bad input (no profiles at all, an unknown or incomplete --window, a bad config)
      3  inconclusive, not a pass: fewer than min_rows rows, no column with data, no profile for
         the last complete window (stale profiles), or a profile writer whose last flush failed
    """
    from llmops.settings import Settings
    from serving.monitoring.drift import load_config, run_drift_report

    settings = Settings.load()
    report = run_drift_report(settings.home, _train_file(dataset), out_dir, config=load_config(config_path),
                              window=window, metrics_file=metrics_file)
    for name, metric in report.metrics.items():
        score = "–" if metric.head is None else f"{metric.head:.3f}"
        state = {True: "ok", False: "DRIFT", None: "not judged"}[metric.passed]
        click.echo(f"{name}: {score} (threshold {metric.threshold}) {state}")
    for check in report.checks:
        for f in check.findings:
            click.echo(f"  {f.severity}: {f.field or ''} {f.message}")
    for why in report.info.get("inconclusive", []):
        click.echo(f"inconclusive: {why}")
    click.echo(f"wrote {out_dir}/report.html, report.json, report.md")
    if any(m.passed is False for m in report.metrics.values()):
        raise GateFailed(f"drift above threshold in window {report.info['window']}")
    if report.info.get("inconclusive"):
        click.echo(f"inconclusive (exit {EXIT_INCONCLUSIVE}): window {report.info['window']} could not be judged; "
                   "not a pass", err=True)
        raise click.exceptions.Exit(EXIT_INCONCLUSIVE)
    if not report.passed:
        raise GateFailed(f"drift report failed for window {report.info['window']}")


@monitor.command("profile-training")
@click.option("--train", "dataset", default=DEFAULT_TRAIN, show_default=True,
              help="Training file (or dataset folder) to profile.")
def profile_training_cmd(dataset: str) -> None:
    """Profile a training file (cached under <home>/monitoring/reference/ by its sha256)."""
    from llmops.settings import Settings
    from serving.monitoring.drift import row_count, training_profile

    view = training_profile(_train_file(dataset), Settings.load().home)
    click.echo(f"profiled {row_count(view)} rows of {_train_file(dataset)}")
