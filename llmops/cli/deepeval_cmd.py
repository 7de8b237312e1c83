"""The DeepEval suite command: deterministic metrics, perplexity and (with a judge) LLM-judged metrics.

    llmops deepeval-suite --endpoint http://127.0.0.1:8000 --dataset datasets/python-faq --limit 20
    LLMOPS_JUDGE_URL=http://127.0.0.1:8001 llmops deepeval-suite --model exports/v1 --ppl-model runs/merged --repeat 3

Writes report.json and report.md (kind "deepeval"). Judged metrics run only with a judge
(LLMOPS_JUDGE_URL / --judge-url); otherwise the report lists them as skipped. Exit 0 when every
gated metric passes, 1 when one fails (unless --no-gate), 2 for bad input.
"""

from __future__ import annotations

from pathlib import Path

import click

from llmops.errors import GateFailed


@click.command("deepeval-suite")
@click.option("--endpoint", metavar="URL", help="Root URL of an OpenAI-compatible server.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A model folder to serve on loopback and evaluate.")
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True,
              help="Serving backend for --model.")
@click.option("--ppl-model", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="A Hugging Face model folder for the eval split's perplexity (torch).")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), default=Path("datasets/python-faq"),
              show_default=True, help="Dataset folder with eval.jsonl.")
@click.option("--prompts", "prompts_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of prompt files (default: prompts).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N eval rows.")
@click.option("--judge-url", envvar="LLMOPS_JUDGE_URL", default=None, help="Judge endpoint (env LLMOPS_JUDGE_URL).")
@click.option("--judge-model", envvar="LLMOPS_JUDGE_MODEL", default=None, help="Judge model (env LLMOPS_JUDGE_MODEL).")
@click.option("--repeat", type=click.IntRange(min=1), default=None,
              help="Judge runs per case, majority vote (default: thresholds file's `repeat`).")
@click.option("--thresholds", "thresholds_path", type=click.Path(path_type=Path), default=None,
              help="Gates file (default: evals/thresholds.yaml, section `deepeval:`).")
@click.option("--api-key", envvar="LLMOPS_EVAL_API_KEY", default=None, help="Bearer token (env LLMOPS_EVAL_API_KEY).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where report.json and report.md go (default: .llmops/reports/deepeval).")
@click.option("--no-gate", is_flag=True, help="Report only: exit 0 even when a threshold fails.")
def deepeval_suite(endpoint: str | None, model_dir: Path | None, backend: str, ppl_model: Path | None,
                   dataset_dir: Path, prompts_dir: Path | None, limit: int | None, judge_url: str | None,
                   judge_model: str | None, repeat: int | None, thresholds_path: Path | None,
                   api_key: str | None, out_dir: Path | None, no_gate: bool) -> None:
    """Score an endpoint's answers on the eval split with DeepEval metrics."""
    from evals.deepeval_runner import run_deepeval
    from evals.judge import OpenAIJudge
    from evals.rule_evals import DEFAULT_THRESHOLDS
    from llmops.cli.endpoint import endpoint_or_served
    from llmops.settings import Settings

    settings = Settings.load()
    judge = OpenAIJudge(judge_url, judge_model, settings.secret("judge_api_key")) if judge_url else None
    with endpoint_or_served(endpoint, model_dir, backend) as url:
        report = run_deepeval(url, dataset_dir, prompts_dir or settings.prompts_dir, ppl_model, limit=limit,
                              judge=judge, thresholds_path=thresholds_path or DEFAULT_THRESHOLDS, repeat=repeat,
                              api_key=api_key)
    json_path, md_path = report.write(out_dir or settings.home / "reports" / "deepeval")
    for name, metric in sorted(report.metrics.items()):
        value = "skipped" if metric.head is None else f"{metric.head:.4g}"
        gate = "" if metric.passed is None else ("  ok" if metric.passed else "  FAILED")
        click.echo(f"  {name:40s} {value}{gate}")
    click.echo(f"judge: {report.info['judge']}")
    click.echo(f"wrote {json_path} and {md_path}")
    if not report.passed and not no_gate:
        failed = sorted(n for n, m in report.metrics.items() if m.passed is False)
        raise GateFailed(f"deepeval thresholds failed: {', '.join(failed) or 'a check failed'} (see {md_path})")
