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
What the two backends share (alias names and history, the version record, manifest checks) is
defined in llmops/registry_base.py and re-exported here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from llmops.settings import Settings

from llmops.errors import InputError
from llmops.files import atomic_dir, atomic_write_json, sha256_tree
from llmops.registry_base import (  # noqa: F401  (re-exported: the registry's API, both backends)
    ALIASES,
    GENESIS,
    NOT_CHECKED,
    AliasConflict,
    IntegrityError,
    ModelVersion,
    _now,
    alias_moves,
    artifact_hash,
    check_alias_history,
    check_alias_name,
    check_expected,
    copy_report,
    move_hash,
    resolve_ref,
    verify_files,
)
from llmops.registry_mlflow import MlflowRegistry


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
        return MlflowRegistry(settings.registry_uri, settings.registry_dir, name=settings.registry_model)
    return Registry(settings.registry_dir)
