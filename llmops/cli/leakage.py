"""Training-data leakage with canaries (evals/leakage.py).

    llmops leakage plant datasets/python-faq --out .llmops/canary/python-faq -n 5
    llmops train dataset=.llmops/canary/python-faq --run-dir .llmops/runs/canary
    llmops leakage check --canaries .llmops/canary/python-faq/canaries.json --model .llmops/runs/canary/merged

`plant` copies a dataset and appends canary rows with random secrets (the original is not touched;
the copy says it is a canary copy and must never be registered). `check` prompts a model (a local
folder with torch, or an endpoint) with each canary's prefix and question and fails (exit 1) when
any output holds a run of at least --min-chars of a secret; report.json and report.md name each.
"""

from __future__ import annotations

from pathlib import Path

import click

from llmops.errors import GateFailed, InputError


@click.group()
def leakage() -> None:
    """Canary rows: plant them in a dataset copy, then check a model does not regurgitate them."""


@leakage.command("plant")
@click.argument("dataset_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="The canary copy (new or empty).")
@click.option("-n", "n", type=click.IntRange(1, 20), default=5, show_default=True, help="Canary rows.")
@click.option("--copies", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Times each canary row is repeated (memorisation grows with repeats).")
def plant(dataset_dir: Path, out_dir: Path, n: int, copies: int) -> None:
    """Copy DATASET_DIR to --out and append canary rows to its train split."""
    from evals.leakage import plant_canaries

    canaries = plant_canaries(dataset_dir, out_dir, n, copies=copies)
    click.echo(f"planted {len(canaries)} canaries x {copies} in {out_dir / 'train.jsonl'}; "
               f"secrets in {out_dir / 'canaries.json'}")


@leakage.command("check")
@click.option("--canaries", "canaries_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              required=True, help="canaries.json written by `plant`.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A Hugging Face model folder, run greedily with torch.")
@click.option("--endpoint", metavar="URL", help="Or an OpenAI-compatible server (/v1/completions).")
@click.option("--min-chars", type=click.IntRange(min=4), default=8, show_default=True,
              help="A run of this many secret characters in an output is a leak.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where report.json and report.md go (default: .llmops/reports/leakage).")
def check(canaries_path: Path, model_dir: Path | None, endpoint: str | None, min_chars: int,
          out_dir: Path | None) -> None:
    """Prompt the model with each canary; exit 1 when any secret comes back."""
    from evals.leakage import check_leakage, endpoint_generate, load_canaries, torch_generate
    from llmops.prompts import chat_format_of, load_prompt
    from llmops.settings import Settings

    if (model_dir is None) == (endpoint is None):
        raise InputError("give exactly one of --model and --endpoint", field="--model")
    settings = Settings.load()
    canaries = load_canaries(canaries_path)
    if model_dir is not None:
        prompt, chat = load_prompt("answer", settings.prompts_dir), chat_format_of(model_dir)
        report = check_leakage(torch_generate(model_dir), canaries, min_chars=min_chars,
                               template=lambda question: prompt.render(chat, question=question))
    else:
        report = check_leakage(endpoint_generate(str(endpoint), api_key=settings.secret("eval_api_key")), canaries,
                               min_chars=min_chars)
    json_path, md_path = report.write(out_dir or settings.home / "reports" / "leakage")
    rate = report.metrics["leakage.canary_leak_rate"].head
    click.echo(f"canary leak rate {rate:.3f} ({len(canaries)} canaries); wrote {json_path} and {md_path}")
    if not report.passed:
        raise GateFailed(f"{rate:.0%} of the canaries leaked (see {md_path})")
