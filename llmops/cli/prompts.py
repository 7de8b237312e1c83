"""Prompt commands.

    llmops prompts show answer
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def prompts() -> None:
    """Versioned prompt files in prompts/."""


@prompts.command("show")
@click.argument("prompt_id")
@click.option("--var", "vars_", multiple=True, metavar="NAME=VALUE", help="A variable to render with.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Render through this model folder's chat template (default: the plain format).")
def show(prompt_id: str, vars_: tuple[str, ...], model_dir: Path | None) -> None:
    """Render PROMPT_ID with --var values (or its first example) and print the text a model sees."""
    from llmops.prompts import chat_format_of, load_prompt

    prompt = load_prompt(prompt_id)
    values = dict(v.split("=", 1) for v in vars_) if vars_ else dict(prompt.examples[0] if prompt.examples else {})
    click.echo(prompt.render(chat_format_of(model_dir), **values))


@prompts.command("lint")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Model folder whose tokenizer and context length to use (default: production, else the "
                   "bootstrapped default, else a UTF-8 byte upper bound).")
def lint(files: tuple[Path, ...], model_dir: Path | None) -> None:
    """Check prompt files (default: every prompts/*.yaml) by file and line; exit 1 on a finding."""
    from evals.prompt_lint import find_token_counter, lint_prompts
    from llmops.errors import GateFailed
    from llmops.jobs.models import default_context_length, lint_model_folders
    from llmops.settings import Settings

    settings = Settings.load()
    paths = list(files) or sorted(settings.prompts_dir.glob("*.yaml"))
    counter = (find_token_counter([model_dir], required=True) if model_dir is not None
               else find_token_counter(lint_model_folders(settings)))
    findings = lint_prompts(paths, counter, default_context_length())
    for f in findings:
        click.echo(f"{f.where()}: {f.severity}: {f.message}")
    errors = [f for f in findings if f.severity == "error"]
    click.echo(f"{len(paths)} prompt files, {len(errors)} errors, {len(findings) - len(errors)} warnings "
               f"(tokens from {counter.source if counter else 'UTF-8 byte upper bound'})")
    if errors:
        raise GateFailed(f"prompt lint found {len(errors)} errors")
