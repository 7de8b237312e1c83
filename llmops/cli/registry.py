"""Registry commands.

    llmops registry list
    llmops registry show production
    llmops registry show production --manifest-sha256
    llmops registry verify 3
"""

from __future__ import annotations

import json
from pathlib import Path

import click


def _registry():
    from llmops.registry import open_registry
    from llmops.settings import Settings

    return open_registry(Settings.load())


@click.group()
def registry() -> None:
    """The model registry (a local folder, or a shared MLflow server with LLMOPS_REGISTRY_URI): versions,
    checksums, lineage and aliases."""


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
@click.option("--manifest-sha256", "manifest_sha", is_flag=True,
              help="Print only the sha256 of the version's manifest (a cache key; the files are not pulled).")
def show(ref: str, manifest_sha: bool) -> None:
    """Print the lineage record of a version or alias (after verifying its checksums)."""
    if manifest_sha:
        from llmops.files import sha256_file

        click.echo(sha256_file(_registry().get(ref, verify=False).path / "manifest.json"))
        return
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
    """Point ALIAS (candidate, production, previous) at version REF (permission `registry.alias`, audited)."""
    from governance.audit import audit_event
    from governance.policy import authorize

    principal = authorize("registry.alias", target=f"alias:{alias}")
    entry = _registry().set_alias(alias, ref, reason=reason, actor=principal.name)
    audit_event("registry.alias", actor=principal.name, role=principal.role, target=f"alias:{alias}",
                details={"from": entry["from"], "to": entry["to"], "alias_history_hash": entry["hash"]}, reason=reason)
    click.echo(f"{entry['alias']}: {entry['from']} -> {entry['to']}")


@registry.command("history")
def history() -> None:
    """The alias history, oldest first."""
    for entry in _registry().alias_history():
        click.echo(f"{entry['time']}  {entry['alias']:10} {entry['from']} -> {entry['to']}  {entry['reason']}")


@registry.command("register-candidate")
@click.option("--pipeline-dir", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="The merge pipeline's folder (stage outputs).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Where the report goes.")
@click.option("--neutral", is_flag=True, envvar="LLMOPS_PROMOTE_NEUTRAL",
              help="The change is meant to be neutral: a tie with production within tolerance is enough.")
def register_candidate(pipeline_dir: Path, out_dir: Path, neutral: bool) -> None:
    """Register the pipeline's candidate if every gate passed and it beats production (promote-if-better)."""
    from llmops.jobs.register import register_candidate as run
    from llmops.settings import Settings

    report = run(Settings.load(), pipeline_dir, out_dir, neutral=neutral)
    click.echo(f"registered version {report.info['registered']} (alias candidate)")
