"""The local model registry: immutable versions with checksums, one lineage record, moving aliases.

    llmops registry list
    llmops registry show production

Layout under `<home>/registry/`:
    versions/<n>/files/...        the artifacts (merged model, adapter, onnx/fp32, onnx/int8, ...)
    versions/<n>/manifest.json    {relative path: sha256} of every file under files/
    versions/<n>/lineage.json     the lineage record (git sha, datasets, prompts, config, metrics, gates)
    aliases.json                  {alias: version}
    alias_history.jsonl           one line per alias move (append-only)
    reports/<n>/<name>/           reports produced after registration (eval against the live server)
    mlflow/<server>/<model>/...   with LLMOPS_REGISTRY_URI: versions pulled from the shared server

A version folder is written under a temp name and renamed into place, so a crash leaves no
half version; ids are allocated under a file lock. Every load re-hashes the files.

`open_registry(settings)` is how commands get a registry: this folder by default, or, with
`LLMOPS_REGISTRY_URI=http://host:5000`, the same interface on a shared MLflow server
(llmops/registry_mlflow.py), whose pulls land in a checksum-verified cache under this folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from llmops.settings import Settings

from llmops.errors import InputError
from llmops.files import atomic_dir, atomic_write_json, sha256_file, sha256_tree

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


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        found = [p.name for p in self.versions_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        return sorted(found, key=int)

    def register(self, artifacts: Mapping[str, Path], lineage: dict[str, Any]) -> ModelVersion:
        """Copy each artifact (file or folder) to files/<name>, checksum everything, write lineage."""
        for name, src in artifacts.items():
            if not Path(src).exists():
                raise InputError(f"artifact {name!r} does not exist", file=str(src))
        with self._lock():
            version = str(int(self.versions()[-1]) + 1 if self.versions() else 1)
            target = self.versions_dir / version
            with atomic_dir(target) as tmp:
                files = tmp / "files"
                files.mkdir()
                for name, src in artifacts.items():
                    src = Path(src)
                    if src.is_dir():
                        shutil.copytree(src, files / name)
                    else:
                        (files / name).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, files / name)
                manifest = sha256_tree(files)
                record = dict(lineage)
                record.update({"version": version, "registered_at": _now(),
                               "artifacts": {name: artifact_hash(manifest, name) for name in artifacts}})
                atomic_write_json(tmp / "manifest.json", manifest)
                atomic_write_json(tmp / "lineage.json", record)
        return ModelVersion(version, target)

    def resolve(self, ref: str) -> str:
        """A version number or an alias name -> the version number."""
        return resolve_ref(ref, self.versions(), self.aliases(), f"in {self.root}")

    def get(self, ref: str, *, verify: bool = True) -> ModelVersion:
        mv = ModelVersion(self.resolve(ref), self.versions_dir / self.resolve(ref))
        if verify:
            self.verify(mv)
        return mv

    def verify(self, mv: ModelVersion) -> None:
        """Re-hash every file; raise IntegrityError naming the first bad file."""
        verify_files(mv)

    # --- aliases -----------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        path = self.root / "aliases.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def alias_history(self) -> list[dict[str, Any]]:
        path = self.root / "alias_history.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def set_alias(self, alias: str, ref: str, *, reason: str = "", actor: str = "llmops",
                  expected: Any = NOT_CHECKED) -> dict[str, Any]:
        """Point `alias` at a version. Moving `production` moves its old target to `previous`.
        `expected` (a version or None): compare-and-set, refused with AliasConflict (nothing moved)
        when the alias points elsewhere by the time the move is made under the lock."""
        check_alias_name(alias)
        version = self.resolve(ref)
        with self._lock():
            aliases = self.aliases()
            check_expected(alias, aliases.get(alias), expected)
            entries = alias_moves(aliases, self.alias_history(), alias, version, reason=reason, actor=actor)
            # the history first: a crash between the two leaves a move recorded but not made, which
            # verify_alias_history reports, never a move made and not recorded
            with open(self.root / "alias_history.jsonl", "a", encoding="utf-8") as handle:
                for entry in entries:
                    handle.write(json.dumps(entry, sort_keys=True) + "\n")
                handle.flush()
            for entry in entries:
                aliases[entry["alias"]] = entry["to"]
            atomic_write_json(self.root / "aliases.json", aliases)
        return entries[-1]

    def verify_alias_history(self) -> list[str]:
        """Problems with the alias history: a line whose hash or chain link is wrong (edited, cut out
        or inserted), or aliases.json disagreeing with the history's last move of an alias. The
        history's head is also recorded in the audit log by whoever moved it (`alias_history_hash`),
        which `llmops audit verify --registry-anchors` checks, so a rewrite of the whole file fails too."""
        return check_alias_history(self.alias_history(), self.aliases())

    def alias_head(self) -> str | None:
        """The hash of the newest alias move (None: no move yet)."""
        history = self.alias_history()
        return history[-1].get("hash") if history else None

    # --- reports produced after registration -------------------------------------------------
    def attach_report(self, ref: str, name: str, src_dir: Path) -> Path:
        return copy_report(self.root, self.resolve(ref), name, src_dir)


def copy_report(root: Path, version: str, name: str, src_dir: Path) -> Path:
    """Copy a report folder to <root>/reports/<version>/<name>, replacing an older one whole."""
    target = root / "reports" / version / name
    if target.exists():
        shutil.rmtree(target)
    with atomic_dir(target) as tmp:
        shutil.copytree(src_dir, tmp, dirs_exist_ok=True)
    return target


class ModelRegistry(Protocol):
    """What commands use of a registry; `Registry` (a folder) and `MlflowRegistry` (a server) provide it."""

    def versions(self) -> list[str]: ...
    def register(self, artifacts: Mapping[str, Path], lineage: dict[str, Any]) -> ModelVersion: ...
    def resolve(self, ref: str) -> str: ...
    def get(self, ref: str, *, verify: bool = True) -> ModelVersion: ...
    def verify(self, mv: ModelVersion) -> None: ...
    def aliases(self) -> dict[str, str]: ...
    def alias_history(self) -> list[dict[str, Any]]: ...
    def set_alias(self, alias: str, ref: str, *, reason: str = "", actor: str = "llmops",
                  expected: Any = NOT_CHECKED) -> dict[str, Any]: ...
    def verify_alias_history(self) -> list[str]: ...
    def alias_head(self) -> str | None: ...
    def attach_report(self, ref: str, name: str, src_dir: Path) -> Path: ...


def open_registry(settings: Settings) -> ModelRegistry:
    """The registry these settings name: the shared MLflow server of `registry_uri`, else the local folder."""
    if settings.registry_uri:
        from llmops.registry_mlflow import MlflowRegistry

        return MlflowRegistry(settings.registry_uri, settings.registry_dir, name=settings.registry_model)
    return Registry(settings.registry_dir)


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
