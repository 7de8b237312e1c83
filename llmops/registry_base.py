"""What both registry backends share: alias names and their hash chain, the version record, the errors,
manifest checks and report copies. llmops/registry.py (a folder) and llmops/registry_mlflow.py (a
shared MLflow server) both build on it; llmops.registry re-exports these names as the registry's API.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.errors import InputError
from llmops.files import atomic_dir, sha256_file, sha256_tree

ALIASES = ("candidate", "production", "previous")
GENESIS = "0" * 64  # prev_hash of the first alias move


def move_hash(entry: Mapping[str, Any]) -> str:
    """sha256 of an alias move's canonical JSON, its own `hash` left out (it covers prev_hash)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def resolve_ref(ref: str, versions: list[str], aliases: Mapping[str, str], where: str) -> str:
    """A version number or an alias name -> the version number; an unknown ref is an InputError
    listing what exists (both registry backends)."""
    if ref in versions:
        return ref
    if ref in aliases:
        return aliases[ref]
    raise InputError(f"no model version or alias {ref!r} {where} "
                     f"(versions: {', '.join(versions) or 'none'}; aliases: {', '.join(aliases) or 'none'})")


class IntegrityError(InputError):
    """A registered file is missing, extra or has a different sha256 than its manifest."""


class AliasConflict(InputError):
    """An alias was not where the mover expected it (another release or rollback moved it first)."""


NOT_CHECKED = object()  # set_alias(expected=...) not given: move whatever the alias points at


@dataclass(frozen=True)
class ModelVersion:
    version: str
    path: Path

    @property
    def files(self) -> Path:
        return self.path / "files"

    @property
    def lineage(self) -> dict[str, Any]:
        return json.loads((self.path / "lineage.json").read_text(encoding="utf-8"))

    @property
    def manifest(self) -> dict[str, str]:
        return json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def copy_report(root: Path, version: str, name: str, src_dir: Path) -> Path:
    """Copy a report folder to <root>/reports/<version>/<name>, replacing an older one whole."""
    target = root / "reports" / version / name
    if target.exists():
        shutil.rmtree(target)
    with atomic_dir(target) as tmp:
        shutil.copytree(src_dir, tmp, dirs_exist_ok=True)
    return target


def verify_files(mv: ModelVersion) -> None:
    """Re-hash every file of a version folder against its manifest; IntegrityError names the first bad file."""
    manifest = mv.manifest
    for rel, expected in manifest.items():
        path = mv.files / rel
        if not path.is_file():
            raise IntegrityError(f"version {mv.version}: file is missing", file=str(path))
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(f"version {mv.version}: sha256 {actual[:12]}… does not match the manifest's "
                                 f"{expected[:12]}… (corrupted or edited artifact)", file=str(path))
    extra = sorted(set(sha256_tree(mv.files)) - set(manifest)) if len(manifest) < 10_000 else []
    if extra:
        raise IntegrityError(f"version {mv.version}: file not in the manifest", file=str(mv.files / extra[0]))


def check_alias_name(alias: str) -> None:
    if alias not in ALIASES:
        raise InputError(f"unknown alias {alias!r}; use one of {', '.join(ALIASES)}", field="alias")


def check_expected(alias: str, current: str | None, expected: Any) -> None:
    if expected is not NOT_CHECKED and current != expected:
        raise AliasConflict(f"{alias} points at version {current}, not the expected {expected}: another release "
                            f"or rollback moved it meanwhile; nothing was moved (check `llmops registry history`)",
                            field="alias")


def alias_moves(aliases: Mapping[str, str], history: list[dict[str, Any]], alias: str, version: str, *,
                reason: str, actor: str) -> list[dict[str, Any]]:
    """The chained history entries of pointing `alias` at `version` (production's old target -> previous)."""
    old = aliases.get(alias)
    moves: list[tuple[str, str | None, str]] = []
    if alias == "production" and old and old != version:
        moves.append(("previous", aliases.get("previous"), old))
    moves.append((alias, old, version))
    seq, prev = (history[-1].get("seq", len(history)), history[-1].get("hash", GENESIS)) if history else (0, GENESIS)
    entries = []
    for a, f, t in moves:
        seq += 1
        entry = {"seq": seq, "time": _now(), "alias": a, "from": f, "to": t, "reason": reason,
                 "actor": actor, "prev_hash": prev}
        entry["hash"] = prev = move_hash(entry)
        entries.append(entry)
    return entries


def check_alias_history(history: list[dict[str, Any]], aliases: Mapping[str, str], *,
                        where: str = "alias_history.jsonl", current: str = "aliases.json") -> list[str]:
    """Broken links of the hash chain, and aliases that disagree with the history's last move of them."""
    problems, prev, last = [], GENESIS, {}
    for n, entry in enumerate(history, start=1):
        if entry.get("prev_hash") != prev:
            problems.append(f"{where}:{n}: prev_hash does not match line {n - 1}'s hash")
        if entry.get("hash") != move_hash(entry):
            problems.append(f"{where}:{n}: hash does not match the entry (edited)")
        prev = entry.get("hash", "")
        last[entry.get("alias")] = entry.get("to")
    for alias, version in aliases.items():
        if last.get(alias) != version:
            problems.append(f"{current}: {alias} -> {version}, but the history's last move of {alias} is "
                            f"-> {last.get(alias)}")
    return problems


def artifact_hash(manifest: dict[str, str], name: str) -> str:
    """One sha256 for an artifact: the hash of its files' (path, sha256) list, or the file's own hash."""
    if name in manifest:
        return manifest[name]
    digest = hashlib.sha256()
    for rel, sha in sorted(manifest.items()):
        if rel.startswith(name + "/"):
            digest.update(f"{rel}\0{sha}\n".encode())
    return digest.hexdigest()


