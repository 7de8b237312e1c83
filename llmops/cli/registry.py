"""Registry commands.

    llmops registry list
    llmops registry show production
    llmops registry verify 3
"""

from __future__ import annotations

import json

import click


def _registry():
    from llmops.registry import Registry
    from llmops.settings import Settings

    return Registry(Settings.load().registry_dir)


@click.group()
def registry() -> None:
    """The local model registry: versions, checksums, lineage and aliases."""


@registry.command("list")
def list_cmd() -> None:
    """List versions with their aliases and headline metrics."""
    reg = _registry()
    by_version: dict[str, list[str]] = {}
    for alias, version in reg.aliases().items():
        by_version.setdefault(version, []).append(alias)
    if not reg.versions():
        click.echo("no versions registered")
    for version in reg.versions():
        mv = reg.get(version, verify=False)
        lin = mv.lineage
        metrics = lin.get("metrics", {})
        click.echo(f"{version:>4}  {lin.get('registered_at', ''):25}  {','.join(by_version.get(version, [])):22} "
                   f"eval_loss={metrics.get('eval_loss')} perplexity={metrics.get('perplexity')}")


@registry.command("show")
@click.argument("ref")
def show(ref: str) -> None:
    """Print the lineage record of a version or alias (after verifying its checksums)."""
    click.echo(json.dumps(_registry().get(ref).lineage, indent=2, sort_keys=True))


@registry.command("verify")
@click.argument("ref")
def verify(ref: str) -> None:
    """Re-hash every file of a version; exit 2 naming the first corrupted file."""
    mv = _registry().get(ref)
    click.echo(f"version {mv.version}: {len(mv.manifest)} files match their sha256")


@registry.command("alias")
@click.argument("alias")
@click.argument("ref")
@click.option("--reason", default="", help="Why (kept in the alias history).")
def alias(alias: str, ref: str, reason: str) -> None:
    """Point ALIAS (candidate, production, previous) at version REF."""
    entry = _registry().set_alias(alias, ref, reason=reason)
    click.echo(f"{entry['alias']}: {entry['from']} -> {entry['to']}")


@registry.command("history")
def history() -> None:
    """The alias history, oldest first."""
    for entry in _registry().alias_history():
        click.echo(f"{entry['time']}  {entry['alias']:10} {entry['from']} -> {entry['to']}  {entry['reason']}")
