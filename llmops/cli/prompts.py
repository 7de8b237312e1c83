"""Prompt commands.

    llmops prompts show answer
"""

from __future__ import annotations

import click


@click.group()
def prompts() -> None:
    """Versioned prompt files in prompts/."""


@prompts.command("show")
@click.argument("prompt_id")
@click.option("--var", "vars_", multiple=True, metavar="NAME=VALUE", help="A variable to render with.")
def show(prompt_id: str, vars_: tuple[str, ...]) -> None:
    """Render PROMPT_ID with --var values (or its first example) and print it."""
    from llmops.prompts import load_prompt

    prompt = load_prompt(prompt_id)
    values = dict(v.split("=", 1) for v in vars_) if vars_ else dict(prompt.examples[0] if prompt.examples else {})
    click.echo(prompt.render(**values))
