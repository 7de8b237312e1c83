"""The eval command: rule-based cases and reference metrics against any OpenAI-compatible endpoint.

    llmops eval --endpoint http://127.0.0.1:8000 --tags smoke
    llmops eval --model .llmops/registry/models/answer/v3 --dataset datasets/python-faq --limit 20

With --endpoint it evaluates a running server (ours, vLLM, TGI, a hosted API). With --model it
starts our server for that model folder on a free loopback port, evaluates it over HTTP the same
way, and stops it. Writes report.json and report.md. Exit 0 when every gate passed, 1 when a
threshold failed (unless --no-gate), 2 for bad input (case files, flags, an unreachable endpoint).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from llmops.errors import GateFailed


def _split(values: tuple[str, ...]) -> list[str]:
    """`--tags smoke,refusal --tags json` -> ["smoke", "refusal", "json"]."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@click.command("eval")
@click.option("--endpoint", metavar="URL", help="Root URL of an OpenAI-compatible server.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A model folder to serve locally (serving.app.running_server) and evaluate.")
@click.option("--backend", default="onnx", show_default=True, help="Serving backend for --model.")
@click.option("--model-name", default=None, help="The requests' `model` field (default: the server's first model).")
@click.option("--api-key", envvar="LLMOPS_EVAL_API_KEY", default=None,
              help="Bearer token for the endpoint (env LLMOPS_EVAL_API_KEY).")
@click.option("--cases", "cases_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of case files (default: evals/cases).")
@click.option("--prompts", "prompts_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of prompt files (default: prompts).")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), default=None,
              help="Dataset folder whose eval.jsonl gets ROUGE-L/F1/EM (e.g. datasets/python-faq).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N dataset rows.")
@click.option("--tags", multiple=True, help="Only cases with any of these tags (comma-separated or repeated).")
@click.option("--prompt", "prompt_ids", multiple=True, help="Only cases using these prompt ids.")
@click.option("--thresholds", "thresholds_path", type=click.Path(path_type=Path), default=None,
              help="Gates file (default: evals/thresholds.yaml).")
@click.option("--baseline", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="A previous eval report.json: adds base/delta and the max-drop gates.")
@click.option("--workers", type=click.IntRange(min=1, max=32), default=4, show_default=True,
              help="Parallel requests.")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Extra attempts per request on connection errors and 429/502/503/504.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where report.json and report.md go (default: .llmops/reports/eval).")
@click.option("--no-gate", is_flag=True, help="Report only: exit 0 even when a threshold fails.")
def eval_cmd(endpoint: str | None, model_dir: Path | None, backend: str, model_name: str | None,
             api_key: str | None, cases_dir: Path | None, prompts_dir: Path | None, dataset_dir: Path | None,
             limit: int | None, tags: tuple[str, ...], prompt_ids: tuple[str, ...],
             thresholds_path: Path | None, baseline: Path | None, workers: int, retries: int,
             out_dir: Path | None,
             no_gate: bool) -> None:
    """Evaluate an endpoint (or a model folder served locally) with the eval cases and dataset."""
    from evals.runner import DEFAULT_THRESHOLDS, run_eval
    from llmops.report import Report
    from llmops.settings import Settings

    settings = Settings.load()
    cases_dir = cases_dir or settings.root / "evals" / "cases"
    prompts_dir = prompts_dir or settings.prompts_dir
    out_dir = out_dir or settings.home / "reports" / "eval"

    from llmops.cli.endpoint import endpoint_or_served

    with endpoint_or_served(endpoint, model_dir, backend) as url:
        report = run_eval(
            url, cases_dir, prompts_dir, dataset_dir, model_name,
            tags=_split(tags), prompt_ids=_split(prompt_ids), limit=limit,
            thresholds_path=thresholds_path or DEFAULT_THRESHOLDS,
            baseline=Report.load(baseline) if baseline else None,
            api_key=api_key, workers=workers, retries=retries,
            model_version=str(model_dir) if model_dir is not None else None,
        )
    if model_dir is not None:
        report.info["model_dir"] = os.fspath(model_dir)
    json_path, md_path = report.write(out_dir)

    failed_cases = [c for c in report.cases if not c["passed"]]
    click.echo(f"{len(report.cases) - len(failed_cases)}/{len(report.cases)} cases passed")
    for name, metric in sorted(report.metrics.items()):
        gate = "  (not gated)" if metric.passed is None else ("  ok" if metric.passed else "  FAILED")
        floor = "" if metric.threshold is None else f" (min {metric.threshold:.3f})"
        click.echo(f"  {name:28s} {metric.head:.3f}{floor}{gate}")
    click.echo(f"wrote {json_path} and {md_path}")
    if not report.passed and not no_gate:
        failed = [n for n, m in report.metrics.items() if m.passed is False]
        raise GateFailed(f"eval thresholds failed: {', '.join(sorted(failed))} (see {md_path})")
