"""The model registry on a shared MLflow server, behind the interface of llmops/registry.py's folder.

    mlflow server --backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlartifacts --port 5000
    export LLMOPS_REGISTRY_URI=http://127.0.0.1:5000
    llmops registry list

On the server (registered model and experiment `LLMOPS_REGISTRY_MODEL`, default `llmops`):
- A version is an MLflow model version. Its source is a run's artifact folder `registry/<uuid>/`
  holding files/..., manifest.json ({path: sha256}) and lineage.json. The run is the training run
  when the lineage names one (`training_run`, llmops/tracking.py), else a `register` run.
- The version's tags: `llmops.manifest_sha256` and `llmops.lineage_sha256` (the trust anchors: they
  live in the server's database, the files in its artifact store), `llmops.artifact.<name>` per
  artifact, `llmops.git_sha`, and `llmops.state=ready`, set last: a version without it is an
  unfinished registration, which no command sees and a failed registration deletes.
- `candidate`, `production` and `previous` are the registered model's aliases. Their history is
  one registered-model tag per move, `llmops.alias_move.<seq>`, holding the same hash-chained
  entry as alias_history.jsonl; the callers record its head in the audit log as before.
- Reports attached after registration (eval report, model card) go to the version's run under
  `reports/v<N>/<name>/`, with the tag `llmops.report.<name>` = their files' sha256.

Pulling (`get`) downloads a version into `<home>/registry/mlflow/<server>/<model>/<version>-<manifest>/`,
checks manifest.json and lineage.json against the tags and every file against the manifest, and
only then renames the folder into place: a corrupted, missing or extra file is an IntegrityError
and nothing is cached. A cached copy is re-hashed on every load, and pulled again if damaged.
`get(ref, verify=False)` (listings, tag lookups) fetches only lineage.json and manifest.json.

Alias races. MLflow has no conditional alias update: setting an alias overwrites it, with no
version or etag to compare. So a move takes a lock that the server's database enforces: a
registered model named `<model>.alias-lock`, created for the move and deleted after it (creating a
name that exists fails with RESOURCE_ALREADY_EXISTS, atomically: the name is the table's key).
Under the lock, `set_alias(expected=...)` is a compare-and-set: a release that read `production`
as version 2 is refused (AliasConflict, nothing moved) when another one moved it meanwhile.
After the move the aliases are read back, so a move made in the same instant outside llmops (the
MLflow UI, another tool, which take no lock) is reported rather than silently lost.

What both backends share (alias names and their hash chain, ModelVersion, IntegrityError,
AliasConflict, manifest checks, report copies) is in llmops/registry_base.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from llmops.errors import InputError
from llmops.files import atomic_dir, sha256_file, sha256_tree
from llmops.registry_base import (
    ALIASES,
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
    resolve_ref,
    verify_files,
)
from llmops.tracking import client as mlflow_client
from llmops.tracking import experiment_id, finish

# ---- the MLflow backend -------------------------------------------------------------------------------------

READY = "ready"
MOVE = "llmops.alias_move."  # + seq: one registered-model tag per alias move


class MlflowRegistry:
    def __init__(self, uri: str, home: Path, *, name: str = "llmops", lock_timeout: float = 30.0) -> None:
        self.uri, self.name, self.lock_timeout = uri.rstrip("/"), name, lock_timeout
        server = hashlib.sha256(self.uri.encode()).hexdigest()[:12]
        self.root = Path(home) / "mlflow" / server / name  # the local cache of pulled versions
        self._mlflow: Any = None

    def __repr__(self) -> str:
        return f"MlflowRegistry({self.uri!r}, model {self.name!r})"

    @property
    def client(self) -> Any:
        if self._mlflow is None:
            self._mlflow = mlflow_client(self.uri)  # InputError when the server is unreachable
        return self._mlflow

    def _model_versions(self) -> list[Any]:
        return list(self.client.search_model_versions(f"name='{self.name}'"))

    def _version(self, version: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.name, version)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            mv = None
        if mv is None or mv.tags.get("llmops.state") != READY:
            raise InputError(f"no model version {version!r} of {self.name!r} at {self.uri}", field="version")
        return mv

    # --- versions ----------------------------------------------------------------------------
    def versions(self) -> list[str]:
        return sorted((v.version for v in self._model_versions() if v.tags.get("llmops.state") == READY), key=int)

    def register(self, artifacts: Mapping[str, Path], lineage: dict[str, Any]) -> ModelVersion:
        """Upload each artifact (file or folder) as files/<name> of a new model version, with its checksums."""
        for name, src in artifacts.items():
            if not Path(src).exists():
                raise InputError(f"artifact {name!r} does not exist", file=str(src))
        from mlflow.exceptions import MlflowException

        client = self.client
        try:
            client.create_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        self.root.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=self.root, prefix=".register.", suffix=".tmp"))
        version, run_id, own_run = None, None, False
        try:
            files = stage / "files"
            files.mkdir()
            for name, src in artifacts.items():
                if Path(src).is_dir():
                    shutil.copytree(src, files / name)
                else:
                    (files / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, files / name)
            manifest = sha256_tree(files)
            run_id, own_run = self._run_for(lineage)
            folder = f"registry/{uuid.uuid4().hex}"
            source = f"{client.get_run(run_id).info.artifact_uri}/{folder}"
            # The server numbers versions atomically; the version is invisible until tagged ready.
            version = str(client.create_model_version(self.name, source, run_id=run_id,
                                                      tags={"llmops.state": "uploading"},
                                                      await_creation_for=0).version)
            record = dict(lineage)
            record.update({"version": version, "registered_at": _now(),
                           "artifacts": {name: artifact_hash(manifest, name) for name in artifacts}})
            (stage / "manifest.json").write_text(_canonical(manifest))
            (stage / "lineage.json").write_text(_canonical(record))
            client.log_artifacts(run_id, str(stage), folder)
            tags = {"llmops.manifest_sha256": sha256_file(stage / "manifest.json"),
                    "llmops.lineage_sha256": sha256_file(stage / "lineage.json"),
                    "llmops.files": str(len(manifest)),
                    "llmops.git_sha": str((lineage.get("git") or {}).get("sha")),
                    **{f"llmops.artifact.{name}": sha for name, sha in record["artifacts"].items()}}
            for key, value in tags.items():
                client.set_model_version_tag(self.name, version, key, value)
            self._log_lineage_metrics(run_id, record)
            client.set_model_version_tag(self.name, version, "llmops.state", READY)  # the commit point
            if own_run:
                finish(client, run_id, "FINISHED")
        except BaseException:
            with contextlib.suppress(Exception):  # best effort: the version stays invisible anyway (not ready)
                if version is not None:
                    client.delete_model_version(self.name, version)
                if own_run and run_id:
                    finish(client, run_id, "FAILED")
            shutil.rmtree(stage, ignore_errors=True)
            raise
        target = self._cache_dir(version, tags["llmops.manifest_sha256"])
        if target.exists():  # left by an earlier server under the same address: this one is the truth
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage, target)
        return ModelVersion(version, target)

    def _run_for(self, lineage: Mapping[str, Any]) -> tuple[str, bool]:
        """(run id, created here): the lineage's training run on this server, else a new `register` run."""
        from mlflow.exceptions import MlflowException

        ref = lineage.get("training_run") or {}
        if ref.get("run_id") and ref.get("tracking_uri", "").rstrip("/") == self.uri:
            with contextlib.suppress(MlflowException):
                return self.client.get_run(ref["run_id"]).info.run_id, False
        exp = experiment_id(self.client, self.name)
        return self.client.create_run(exp, run_name="register", tags={"llmops.kind": "register"}).info.run_id, True

    def _log_lineage_metrics(self, run_id: str, record: Mapping[str, Any]) -> None:
        """The version's metrics (eval and gate metrics too) on its run, where the run lacks them."""
        from mlflow.entities import Metric

        have = self.client.get_run(run_id).data.metrics
        now = int(time.time() * 1000)
        points = [Metric(k, float(v), now, 0) for k, v in (record.get("metrics") or {}).items()
                  if isinstance(v, int | float) and not isinstance(v, bool) and k not in have]
        if points:
            self.client.log_batch(run_id, metrics=points[:1000])

    def resolve(self, ref: str) -> str:
        """A version number or an alias name -> the version number."""
        return resolve_ref(ref, self.versions(), self.aliases(), f"of {self.name!r} at {self.uri}")

    def get(self, ref: str, *, verify: bool = True) -> ModelVersion:
        """The version pulled into the local cache, every checksum verified before it is returned."""
        version = self.resolve(ref)
        mv = self._version(version)
        folder = self._cache_dir(version, mv.tags["llmops.manifest_sha256"])
        if folder.is_dir():
            cached = ModelVersion(version, folder)
            if not verify:
                return cached
            try:
                self._check(cached, mv.tags)
                return cached
            except IntegrityError:
                shutil.rmtree(folder)  # a damaged local copy: the server's is pulled and checked again
        if not verify:
            return self._pull_meta(version, mv)
        return self._pull(version, mv, folder)

    def verify(self, mv: ModelVersion) -> None:
        self._check(mv, self._version(mv.version).tags)

    def _cache_dir(self, version: str, manifest_sha: str) -> Path:
        return self.root / f"{version}-{manifest_sha[:16]}"

    def _check(self, mv: ModelVersion, tags: Mapping[str, str]) -> None:
        """manifest.json and lineage.json against the version's tags, then every file against the manifest."""
        for name in ("manifest", "lineage"):
            path = mv.path / f"{name}.json"
            if not path.is_file():
                raise IntegrityError(f"version {mv.version}: {name}.json is missing (on the server at {self.uri})",
                                     file=str(path))
            actual, expected = sha256_file(path), tags.get(f"llmops.{name}_sha256", "")
            if actual != expected:
                raise IntegrityError(f"version {mv.version}: {name}.json has sha256 {actual[:12]}…, the version's "
                                     f"tag says {expected[:12]}… (corrupted or edited on the server)", file=str(path))
        verify_files(mv)

    def _download(self, source: str, into: Path) -> Path:
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(into),
                                                            tracking_uri=self.uri))
        except (MlflowException, OSError) as exc:
            raise IntegrityError(f"could not download {source} from {self.uri}: {exc}") from None

    def _pull(self, version: str, mv: Any, folder: Path) -> ModelVersion:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        try:
            pulled = self._download(mv.source, tmp)
            (pulled / "files").mkdir(exist_ok=True)  # an empty files/ is not uploaded; its absence is checked below
            self._check(ModelVersion(version, pulled), mv.tags)
            if not folder.exists():  # another process may have pulled the same version meanwhile
                os.replace(pulled, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return ModelVersion(version, folder)

    def _pull_meta(self, version: str, mv: Any) -> ModelVersion:
        """Only lineage.json and manifest.json (checked against their tags): enough to read the lineage."""
        folder = self.root / "meta" / f"{version}-{mv.tags['llmops.manifest_sha256'][:16]}"
        if not folder.is_dir():
            with atomic_dir(folder) as tmp:
                for name in ("manifest.json", "lineage.json"):
                    with contextlib.suppress(IntegrityError):  # a missing file is reported by the check below
                        self._download(f"{mv.source}/{name}", tmp)
                for name in ("manifest", "lineage"):
                    path = tmp / f"{name}.json"
                    if not path.is_file() or sha256_file(path) != mv.tags.get(f"llmops.{name}_sha256"):
                        raise IntegrityError(f"version {version}: {name}.json is missing or does not match the "
                                             f"version's sha256 tag (corrupted on the server at {self.uri})")
        return ModelVersion(version, folder)

    # --- aliases -----------------------------------------------------------------------------
    def _registered_model(self) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def aliases(self) -> dict[str, str]:
        rm = self._registered_model()
        return {a: str(v) for a, v in (rm.aliases if rm else {}).items() if a in ALIASES}

    def alias_history(self) -> list[dict[str, Any]]:
        rm = self._registered_model()
        moves = [(int(k[len(MOVE):]), v) for k, v in (rm.tags if rm else {}).items() if k.startswith(MOVE)]
        return [json.loads(v) for _, v in sorted(moves)]

    @contextlib.contextmanager
    def _alias_lock(self, actor: str) -> Iterator[None]:
        """Hold `<model>.alias-lock` (see the module doc); wait up to lock_timeout, then AliasConflict."""
        from mlflow.exceptions import MlflowException

        lock = f"{self.name}.alias-lock"
        holder = f"{actor}@{socket.gethostname()}:{os.getpid()}"
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                self.client.create_registered_model(lock, tags={"holder": holder, "since": _now()},
                                                    description="llmops: an alias move is in progress")
                break
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            if time.monotonic() > deadline:
                with contextlib.suppress(MlflowException):
                    tags = self.client.get_registered_model(lock).tags
                    holder = f"{tags.get('holder')} since {tags.get('since')}"
                raise AliasConflict(f"another alias move holds the lock {lock!r} at {self.uri} ({holder}); "
                                    f"nothing was moved. If that process died, delete the registered model {lock!r} "
                                    "(MLflow UI) and retry", field="alias")
            time.sleep(0.2)
        try:
            yield
        finally:
            with contextlib.suppress(MlflowException):
                self.client.delete_registered_model(lock)

    def set_alias(self, alias: str, ref: str, *, reason: str = "", actor: str = "llmops",
                  expected: Any = NOT_CHECKED) -> dict[str, Any]:
        """Point `alias` at a version (production's old target -> previous), under the server-side lock;
        `expected`: compare-and-set (AliasConflict when the alias points elsewhere; nothing moved)."""
        check_alias_name(alias)
        version = self.resolve(ref)
        with self._alias_lock(actor):
            aliases = self.aliases()
            check_expected(alias, aliases.get(alias), expected)
            entries = alias_moves(aliases, self.alias_history(), alias, version, reason=reason, actor=actor)
            for entry in entries:  # the history first, as in the folder registry
                self.client.set_registered_model_tag(self.name, f"{MOVE}{entry['seq']:08d}",
                                                     json.dumps(entry, sort_keys=True))
            for entry in entries:
                self.client.set_registered_model_alias(self.name, entry["alias"], entry["to"])
            now = self.aliases()
            lost = {e["alias"]: e["to"] for e in entries if now.get(e["alias"]) != e["to"]}
            if lost:
                raise AliasConflict(f"alias moves {lost} were overwritten while they were made (a move outside "
                                    f"llmops?); now: {now}; see `llmops registry history`", field="alias")
        return entries[-1]

    def verify_alias_history(self) -> list[str]:
        """The hash chain of the alias moves, and the MLflow aliases against the history's last moves."""
        where = f"{self.uri} model {self.name!r}"
        return check_alias_history(self.alias_history(), self.aliases(), where=f"{where} alias history",
                                   current=f"{where} aliases")

    def alias_head(self) -> str | None:
        history = self.alias_history()
        return history[-1].get("hash") if history else None

    # --- reports produced after registration -------------------------------------------------
    def attach_report(self, ref: str, name: str, src_dir: Path) -> Path:
        """Upload a report folder to the version's run and tag its sha256; returns the local copy."""
        version = self.resolve(ref)
        mv = self._version(version)
        digest = hashlib.sha256(_canonical(sha256_tree(Path(src_dir))).encode()).hexdigest()
        self.client.log_artifacts(mv.run_id, str(src_dir), f"reports/v{version}/{name}")
        self.client.set_model_version_tag(self.name, version, f"llmops.report.{name}", digest)
        return copy_report(self.root, version, name, src_dir)

    def training_run(self, ref: str) -> dict[str, Any]:
        """The MLflow run of a version: its id, params, final metrics and the loss per step."""
        mv = self._version(self.resolve(ref))
        run = self.client.get_run(mv.run_id)
        loss = [(m.step, m.value) for m in self.client.get_metric_history(mv.run_id, "loss")]
        return {"run_id": mv.run_id, "name": run.info.run_name, "params": dict(run.data.params),
                "metrics": dict(run.data.metrics), "loss": sorted(loss),
                "url": f"{self.uri}/#/experiments/{run.info.experiment_id}/runs/{mv.run_id}"}


def _canonical(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
