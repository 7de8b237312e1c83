"""The load-test gate: locust against a loopback server, checked against loadtests/slo.yaml.

    llmops loadtest --model .llmops/runs/export/v1/fp32 --users 4 --duration 20s
    llmops loadtest --target http://127.0.0.1:8000 --slo loadtests/slo.yaml --out .llmops/reports/loadtest

With --target it loads a running server (loopback only; anything else exits 2). With --model it
starts our server for that folder on a free loopback port (serving.app.running_server), loads it
and stops it. Writes report.json, report.md and latency.png into --out. Exit 0 when every SLO
holds, 1 when one is breached, 2 for bad input (flags, SLO file, a non-loopback target).
"""

from __future__ import annotations

from pathlib import Path

import click

from llmops.errors import GateFailed


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    from loadtests.slo import parse_duration

    try:
        return parse_duration(value, "--duration")
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@click.command()
@click.option("--target", metavar="URL", help="Root URL of a running server on loopback, e.g. http://127.0.0.1:8000.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A model folder to serve on loopback for the test (an export folder, or HF with --backend torch).")
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True,
              help="Serving backend for --model.")
@click.option("--users", type=click.IntRange(1, 64), default=None, help="Concurrent users (default: the SLO file's).")
@click.option("--duration", callback=_duration, default=None, metavar="TIME",
              help="Run time such as 20s or 1m (default: the SLO file's).")
@click.option("--slo", "slo_path", type=click.Path(path_type=Path), default=Path("loadtests/slo.yaml"),
              show_default=True, help="SLO and run-bounds file.")
@click.option("--eval-set", type=click.Path(path_type=Path), default=None,
              help="JSONL of questions (default: datasets/python-faq/eval.jsonl).")
@click.option("--api-key", envvar="LOADTEST_API_KEY", default=None,
              help="Bearer token sent with every request (env LOADTEST_API_KEY).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path(".llmops/reports/loadtest"),
              show_default=True, help="Folder for report.json, report.md, latency.png and locust's raw files.")
def loadtest(target: str | None, model_dir: Path | None, backend: str, users: int | None, duration: float | None,
             slo_path: Path, eval_set: Path | None, api_key: str | None, out_dir: Path) -> None:
    """Load-test a server with locust and gate p95 latency, TTFT, errors, requests/s and tokens/s."""
    from llmops.cli.endpoint import endpoint_or_served
    from loadtests.locust_runner import check_loopback, run_loadtest
    from loadtests.slo import load_slo

    if target is not None and model_dir is None:
        check_loopback(target)  # before anything else starts
    slo = load_slo(slo_path)  # a bad SLO file fails before a server is started
    with endpoint_or_served(target, model_dir, backend, flags="--target URL or --model DIR") as url:
        info = {"model": str(model_dir), "backend": backend} if model_dir is not None else None
        report = run_loadtest(url, slo, out_dir, users=users, duration=duration, eval_set=eval_set,
                              api_key=api_key, info=info)
    for name in ("requests_per_s", "error_rate", "p95_latency_ms", "ttft_p95_ms", "tokens_per_s"):
        m = report.metrics[name]
        head = "n/a" if m.head is None else f"{m.head:.4g}"
        mark = "ok" if m.passed else "BREACHED"
        click.echo(f"{name:16} {head:>10}  (SLO {'>=' if m.higher_is_better else '<='} {m.threshold:g})  {mark}")
    click.echo(f"report: {Path(out_dir) / 'report.md'}")
    if not report.passed:
        breached = [n for n, m in report.metrics.items() if m.passed is False]
        raise GateFailed(f"load test breached {len(breached)} SLO(s): {', '.join(breached)}")
