"""Monitoring commands: drift of the serving profiles against training data and the previous window.

    llmops monitor report                         # latest window vs training + previous; exit 1 on drift
    llmops monitor report --window 20261122T1400Z --out reports/drift
    llmops monitor profile-training               # (re)build the cached training-data profile
"""

from __future__ import annotations

from pathlib import Path

import click

from llmops.errors import GateFailed

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
@click.option("--window", default=None, help="Window to judge, e.g. 20261122T1400Z (default: the latest).")
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
    """Drift report of a serving window; exit 1 when a drift score passes its threshold."""
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
    click.echo(f"wrote {out_dir}/report.html, report.json, report.md")
    if not report.passed:
        raise GateFailed(f"drift above threshold in window {report.info['window']}")


@monitor.command("profile-training")
@click.option("--train", "dataset", default=DEFAULT_TRAIN, show_default=True,
              help="Training file (or dataset folder) to profile.")
def profile_training_cmd(dataset: str) -> None:
    """Profile a training file (cached under <home>/monitoring/reference/ by its sha256)."""
    from llmops.settings import Settings
    from serving.monitoring.drift import row_count, training_profile

    view = training_profile(_train_file(dataset), Settings.load().home)
    click.echo(f"profiled {row_count(view)} rows of {_train_file(dataset)}")
