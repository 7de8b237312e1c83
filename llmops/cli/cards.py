"""Model cards, model comparison and publishing.

    llmops card production --out build/card
    llmops compare .llmops/models/default-* path/to/other-model
    llmops publish candidate --repo-id org/llmops-python-faq
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("card")
@click.argument("ref")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Also copy the cards here.")
def card(ref: str, out_dir: Path | None) -> None:
    """Write the Hugging Face model card and dataset card of version REF (stored with the version)."""
    from governance.cards import write_cards
    from llmops.registry import open_registry
    from llmops.settings import Settings

    settings = Settings.load()
    for path in write_cards(open_registry(settings), ref, out_dir, settings.root):
        click.echo(str(path))


@click.command("compare")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--limit", default=16, show_default=True, help="Eval-split rows scored per model.")
@click.option("--tags", multiple=True, default=("smoke",), show_default=True, help="Case tags to run.")
def compare(models: tuple[Path, ...], limit: int, tags: tuple[str, ...]) -> None:
    """Evaluate several base or candidate models on the same cases and eval rows; print a ranking."""
    from evals.rule_evals import run_eval
    from llmops.settings import Settings
    from serving.app import running_server

    settings = Settings.load()
    rows = []
    for model in models:
        backend = "onnx" if (model / "model.onnx").is_file() or (model / "fp32").is_dir() else "torch"
        with running_server(model, backend=backend) as url:
            report = run_eval(url, settings.root / "evals" / "cases", settings.prompts_dir,
                              settings.datasets_dir / "python-faq", limit=limit, tags=list(tags))
        m = {name: metric.head for name, metric in report.metrics.items()}
        passed = sum(c["passed"] for c in report.cases)
        rows.append((m.get("dataset.rouge_l", 0.0), m.get("dataset.token_f1", 0.0), passed, len(report.cases), model))
    rows.sort(key=lambda r: (r[0], r[1], r[2]), reverse=True)
    click.echo("| rank | model | ROUGE-L | token F1 | cases passed |\n|---|---|---|---|---|")
    for i, (rouge, f1, passed, total, model) in enumerate(rows, 1):
        click.echo(f"| {i} | {model} | {rouge:.4f} | {f1:.4f} | {passed}/{total} |")


@click.command("publish")
@click.argument("ref")
@click.option("--repo-id", envvar="LLMOPS_HUB_REPO", required=True, help="Hub repo, e.g. org/name (env LLMOPS_HUB_REPO).")
@click.option("--token", envvar="HF_TOKEN", default=None, help="Hub token (env HF_TOKEN); never printed.")
@click.option("--what", type=click.Choice(["merged", "adapter"]), default="merged", show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the files and commit message; send nothing.")
def publish(ref: str, repo_id: str, token: str | None, what: str, dry_run: bool) -> None:
    """Push version REF (merged weights or adapter, ONNX, card) to the Hugging Face Hub."""
    from llmops.jobs.publish import publish_version
    from llmops.registry import open_registry
    from llmops.settings import Settings

    settings = Settings.load()
    plan = publish_version(open_registry(settings), ref, repo_id, token=token, what=what, dry_run=dry_run,
                           repo_root=settings.root)
    click.echo(plan["commit_message"])
    for path in plan["files"]:
        click.echo(f"  {path}")
    click.echo("dry run: nothing sent" if dry_run else f"pushed to {plan.get('url', repo_id)}")
