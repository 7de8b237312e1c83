"""Governance commands: the audit log and API keys.

    llmops audit verify                       # 0 intact, 1 tampered, 2 missing/unreadable
    llmops audit verify --anchor 42:9f86d0...  # also prove nothing after seq 42 was cut or rewritten
    llmops audit show --tail 20 --action release
    llmops audit head
    llmops keys create --role release-manager --name ci-release
    llmops keys list
    llmops keys revoke 3f9c0a1b2d4e --reason "leaked in a log"

Guarded by governance/policy.yaml: reading the log needs `audit.read`, keys need `keys.manage`.
The caller is the holder of LLMOPS_API_KEY, else the local operator with the policy's local_role.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _settings():
    from llmops.settings import Settings

    return Settings.load()


def _log_path(log: str | None) -> Path:
    from governance.audit import audit_log_path

    return Path(log) if log else audit_log_path(_settings())


@click.group()
def audit() -> None:
    """The hash-chained audit log: verify it, show entries."""


@audit.command("verify")
@click.option("--log", type=click.Path(dir_okay=False), default=None, help="Log file (default <home>/audit/audit.jsonl).")
@click.option("--anchor", default=None, metavar="SEQ:HASH", help="A head recorded earlier (`llmops audit head`).")
@click.option("--registry-anchors", is_flag=True,
              help="Also check the head every registered version recorded in its lineage (audit_anchor): a log "
                   "cut or rewritten before a registration fails; and the registry's alias history: its own hash "
                   "chain, aliases.json against it, and its head recorded in the audit log by the move's entry.")
def verify_cmd(log: str | None, anchor: str | None, registry_anchors: bool) -> None:
    """Check every entry's hash and the chain; exit 1 naming each tampered line."""
    from governance.audit import head, parse_anchor, verify
    from governance.policy import authorize
    from llmops.errors import GateFailed

    authorize("audit.read", target="audit-log")
    path = _log_path(log)
    anchors = [parse_anchor(anchor)] if anchor else []
    if registry_anchors:
        from llmops.registry import open_registry
        from llmops.settings import Settings

        reg = open_registry(Settings.load())
        recorded = [reg.get(v, verify=False).lineage.get("audit_anchor") for v in reg.versions()]
        anchors += [parse_anchor(a) for a in recorded if a]
        click.echo(f"{len(recorded)} registered versions, {sum(1 for a in recorded if a)} with an audit anchor")
    problems: list[Any] = verify(path) if not anchors else [p for a in anchors for p in verify(path, anchor=a)]
    problems = list({str(p): p for p in problems}.values())
    if registry_anchors:
        problems += alias_history_problems(reg, path)
    if problems:
        for problem in problems:
            click.echo(f"{path}: {problem}")
        raise GateFailed(f"audit log {path}: {len(problems)} problem(s); it was edited, cut or damaged")
    last = head(path)
    click.echo(f"audit log intact: {path}, {last[0] if last else 0} entries"
               + (f", head {last[0]}:{last[1]}" if last else ""))


def alias_history_problems(reg: Any, log: Path) -> list[str]:
    """The alias history's own chain, and its tie to the audit log: the audit entries of alias moves
    record the history's hash at the time (alias_history_hash), so the history's head must be one of
    them (no unaudited move after the last audited one), and every recorded hash must still be in
    the history (it was not rewritten)."""
    from governance.audit import read_entries

    problems = [f"registry {p}" for p in reg.verify_alias_history()]
    recorded = [e["details"]["alias_history_hash"] for _, e in read_entries(log)
                if e and isinstance(e.get("details"), dict) and e["details"].get("alias_history_hash")]
    hashes = {h.get("hash") for h in reg.alias_history()}
    head = reg.alias_head()
    if head and head not in recorded:
        problems.append(f"registry alias_history.jsonl: its newest move ({head[:12]}) has no audit entry "
                        "(moved outside llmops, or the audit log was cut)")
    problems += [f"registry alias_history.jsonl: the move {h[:12]} the audit log recorded is gone (rewritten)"
                 for h in recorded if h not in hashes]
    return problems


@audit.command("head")
@click.option("--log", type=click.Path(dir_okay=False), default=None, help="Log file (default <home>/audit/audit.jsonl).")
def head_cmd(log: str | None) -> None:
    """Print SEQ:HASH of the newest entry, to keep elsewhere and pass to `verify --anchor`."""
    from governance.audit import head
    from governance.policy import authorize

    authorize("audit.read", target="audit-log")
    last = head(_log_path(log))
    click.echo(f"{last[0]}:{last[1]}" if last else "empty")


@audit.command("show")
@click.option("--log", type=click.Path(dir_okay=False), default=None, help="Log file (default <home>/audit/audit.jsonl).")
@click.option("--tail", type=click.IntRange(min=1), default=None, help="Only the last N entries.")
@click.option("--action", default=None, help="Only this action, or this prefix (`release` matches release.start).")
@click.option("--json", "as_json", is_flag=True, help="One JSON entry per line, as stored.")
def show(log: str | None, tail: int | None, action: str | None, as_json: bool) -> None:
    """Print entries, oldest first (does not verify; run `llmops audit verify`)."""
    from governance.audit import read_entries
    from governance.policy import authorize

    authorize("audit.read", target="audit-log")
    rows = read_entries(_log_path(log))
    if action:
        rows = [(n, e) for n, e in rows if e and (e.get("action") == action
                                                   or str(e.get("action", "")).startswith(action + "."))]
    if tail:
        rows = rows[-tail:]
    for lineno, entry in rows:
        if entry is None:
            click.echo(f"line {lineno}: <garbled>")
        elif as_json:
            click.echo(json.dumps(entry, ensure_ascii=False))
        else:
            extra = f"  reason={entry.get('reason')!r}" if entry.get("reason") else ""
            details = json.dumps(entry.get("details", {}), sort_keys=True, ensure_ascii=False)
            click.echo(f"{entry.get('seq'):>5} {entry.get('time')}  {entry.get('action'):18} "
                       f"{entry.get('actor')} ({entry.get('role')}) -> {entry.get('target')}  {details}{extra}")
    if not rows:
        click.echo("no entries")


def _key_manager():
    """(principal, settings) for a key command. The very first key may be created by the local
    operator even when the policy's local_role is null: otherwise nobody could ever create one."""
    from governance.apikeys import KeyStore, Principal, configured_key, key_file
    from governance.audit import local_actor
    from governance.policy import authorize

    settings = _settings()
    if configured_key(settings) is None and not KeyStore(key_file(settings)).list():
        return Principal(local_actor(), "bootstrap"), settings
    return authorize("keys.manage", target="apikeys", settings=settings), settings


@click.group()
def keys() -> None:
    """API keys with roles: create (shown once), list (never secrets), revoke."""


@keys.command("create")
@click.option("--role", required=True, help="admin, release-manager, developer or user.")
@click.option("--name", required=True, help="Who or what holds the key (kept with it, shown in logs).")
def create(role: str, name: str) -> None:
    """Create a key and print it ONCE; only its sha256 is stored."""
    from governance.apikeys import create_key

    principal, settings = _key_manager()
    key = create_key(role, name, by=principal, settings=settings)
    click.echo(key)
    click.echo(f"created a {role} key for {name!r}; store it now, it cannot be shown again", err=True)


@keys.command("list")
def list_cmd() -> None:
    """List keys: id, role, name, created, revoked. Never the secrets (they are not stored)."""
    from governance.apikeys import KeyStore, key_file

    principal, settings = _key_manager()
    records = KeyStore(key_file(settings)).list()
    if not records:
        click.echo("no keys")
    for r in records:
        state = f"revoked {r.revoked}" if r.revoked else "active"
        click.echo(f"{r.key_id}  {r.role:16} {r.name:24} created {r.created}  {state}")


@keys.command("revoke")
@click.argument("key_id")
@click.option("--reason", default="", help="Why (kept in the audit log).")
def revoke(key_id: str, reason: str) -> None:
    """Revoke a key by its id; a running server rejects it on the next request."""
    from governance.apikeys import revoke_key

    principal, settings = _key_manager()
    record = revoke_key(key_id, by=principal, reason=reason, settings=settings)
    click.echo(f"revoked {record.key_id} ({record.name}, {record.role}) at {record.revoked}")


@keys.command("whoami")
def whoami() -> None:
    """Who the CLI acts as: the holder of LLMOPS_API_KEY, else the local operator."""
    from governance.apikeys import current_principal
    from governance.policy import load_policy

    settings = _settings()
    p = current_principal(settings=settings, local_role=load_policy(settings=settings).local_role)
    click.echo(f"{p.name} role={p.role}" + (f" key_id={p.key_id}" if p.key_id else " (no API key)"))
