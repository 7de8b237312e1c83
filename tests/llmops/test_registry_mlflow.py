"""The registry on a real `mlflow server` (loopback, SQLite backend store, local artifact root): pulls
verify every checksum, aliases move with their history, races are refused, and a second checkout
sees what the first one registered, released and trained. No mocks; tiny files, no training."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops.errors import InputError
from llmops.launch import free_port, running_process
from llmops.registry import AliasConflict, IntegrityError, open_registry
from llmops.registry_mlflow import MlflowRegistry
from llmops.settings import Settings
from llmops.tracking import log_training_run, training_run_ref
from tests.llmops.test_registry import release_and_roll_back


class Server:
    def __init__(self, uri: str, artifacts: Path) -> None:
        self.uri, self.artifacts = uri, artifacts

    def stored(self, source: str) -> Path:
        """The server-side folder of an `mlflow-artifacts:/...` source (its local artifact root)."""
        assert source.startswith("mlflow-artifacts:/"), source
        return self.artifacts / source.removeprefix("mlflow-artifacts:/")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`mlflow server` on a free loopback port, stopped with its whole process group at teardown."""
    base = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    exe = Path(sys.executable).parent / "mlflow"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers
    uri = f"http://127.0.0.1:{port}"
    cmd = [str(exe), "server", "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
           "--artifacts-destination", str(base / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    with running_process(cmd, f"{uri}/health", env=env, timeout=180, what="mlflow server", stop_timeout=20,
                         log=base / "server.log", new_session=True):
        yield Server(uri, base / "artifacts")


@pytest.fixture
def model_name() -> str:
    """A registered model of its own for each test."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def artifacts(tmp_path: Path) -> dict[str, Path]:
    model = tmp_path / "src" / "model"
    model.mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"\x00\x01" * 100)
    (model / "config.json").write_text('{"a": 1}')
    curve = tmp_path / "src" / "curve.png"
    curve.write_bytes(b"png")
    return {"model": model, "loss_curve.png": curve}


def test_register_and_pull_round_trip(mlflow_server: Server, model_name: str, tmp_path: Path,
                                      artifacts: dict[str, Path]) -> None:
    first = MlflowRegistry(mlflow_server.uri, tmp_path / "a", name=model_name)
    mv = first.register(artifacts, {"metrics": {"eval_loss": 1.5}, "git": {"sha": "abc123"}})
    assert mv.version == "1"
    assert set(mv.manifest) == {"model/weights.bin", "model/config.json", "loss_curve.png"}
    assert mv.lineage["version"] == "1" and set(mv.lineage["artifacts"]) == {"model", "loss_curve.png"}

    # the MLflow model version carries the trust anchors as tags
    tags = first.client.get_model_version(model_name, "1").tags
    from llmops.files import sha256_file

    assert tags["llmops.manifest_sha256"] == sha256_file(mv.path / "manifest.json")
    assert tags["llmops.lineage_sha256"] == sha256_file(mv.path / "lineage.json")
    assert tags["llmops.artifact.loss_curve.png"] == mv.manifest["loss_curve.png"]
    assert tags["llmops.git_sha"] == "abc123" and tags["llmops.state"] == "ready"

    # another home pulls it from the server: same bytes, verified
    second = MlflowRegistry(mlflow_server.uri, tmp_path / "b", name=model_name)
    pulled = second.get("1")
    assert pulled.path != mv.path and pulled.path.is_relative_to(tmp_path / "b")
    assert (pulled.files / "model" / "weights.bin").read_bytes() == b"\x00\x01" * 100
    assert pulled.manifest == mv.manifest and pulled.lineage == mv.lineage
    assert first.register(artifacts, {}).version == "2"
    assert second.versions() == ["1", "2"]
    # listings read the lineage without pulling the files
    meta = MlflowRegistry(mlflow_server.uri, tmp_path / "c", name=model_name).get("2", verify=False)
    assert meta.lineage["version"] == "2" and not meta.files.exists()


def test_corrupted_or_missing_artifact_on_the_server_is_refused(mlflow_server: Server, model_name: str,
                                                                tmp_path: Path, artifacts: dict[str, Path]) -> None:
    reg = MlflowRegistry(mlflow_server.uri, tmp_path / "a", name=model_name)
    reg.register(artifacts, {})
    reg.register(artifacts, {})
    reg.register(artifacts, {})
    stored = [mlflow_server.stored(reg.client.get_model_version(model_name, v).source) for v in ("1", "2", "3")]
    (stored[0] / "files" / "model" / "weights.bin").write_bytes(b"tampered")
    (stored[1] / "files" / "model" / "config.json").unlink()
    # the manifest edited to match a tampered file: the version's sha256 tag still catches it
    (stored[2] / "files" / "loss_curve.png").write_bytes(b"evil")
    manifest = json.loads((stored[2] / "manifest.json").read_text())
    from llmops.files import sha256_bytes

    manifest["loss_curve.png"] = sha256_bytes(b"evil")
    (stored[2] / "manifest.json").write_text(json.dumps(manifest))

    fresh = MlflowRegistry(mlflow_server.uri, tmp_path / "b", name=model_name)
    with pytest.raises(IntegrityError, match="weights.bin.*does not match"):
        fresh.get("1")
    with pytest.raises(IntegrityError, match="config.json.*missing|missing.*config.json"):
        fresh.get("2")
    with pytest.raises(IntegrityError, match="manifest.json has sha256 .* tag says"):
        fresh.get("3")
    # nothing unverified was cached
    assert not [p for p in fresh.root.glob("*") if p.name[0].isdigit()]


def test_a_damaged_local_copy_is_pulled_again(mlflow_server: Server, model_name: str, tmp_path: Path,
                                              artifacts: dict[str, Path]) -> None:
    reg = MlflowRegistry(mlflow_server.uri, tmp_path / "a", name=model_name)
    mv = reg.register(artifacts, {})
    (mv.files / "model" / "weights.bin").write_bytes(b"bit rot")
    again = reg.get("1")
    assert (again.files / "model" / "weights.bin").read_bytes() == b"\x00\x01" * 100


def test_unknown_version_or_alias_is_refused(mlflow_server: Server, model_name: str, tmp_path: Path,
                                             artifacts: dict[str, Path]) -> None:
    reg = MlflowRegistry(mlflow_server.uri, tmp_path / "a", name=model_name)
    with pytest.raises(InputError, match=r"no model version or alias '1' .*versions: none"):
        reg.get("1")
    reg.register(artifacts, {})
    with pytest.raises(InputError, match=r"no model version or alias '9' .*versions: 1; aliases: none"):
        reg.get("9")
    with pytest.raises(InputError, match="no model version or alias 'production'"):
        reg.resolve("production")
    with pytest.raises(InputError, match="unknown alias"):
        reg.set_alias("staging", "1")
    with pytest.raises(InputError, match="does not exist"):
        reg.register({"model": tmp_path / "nope"}, {})
    assert reg.versions() == ["1"]


def test_aliases_move_with_their_history(mlflow_server: Server, model_name: str, tmp_path: Path,
                                         artifacts: dict[str, Path]) -> None:
    reg = MlflowRegistry(mlflow_server.uri, tmp_path / "a", name=model_name)
    release_and_roll_back(reg, artifacts)
    # they are MLflow's own aliases
    assert reg.client.get_model_version_by_alias(model_name, "production").version == "1"
    other = MlflowRegistry(mlflow_server.uri, tmp_path / "b", name=model_name)
    history = other.alias_history()
    assert [(h["alias"], h["from"], h["to"]) for h in history] == [
        ("production", None, "1"), ("previous", None, "1"), ("production", "1", "2"),
        ("previous", "1", "2"), ("production", "2", "1")]
    assert other.verify_alias_history() == [] and other.alias_head() == history[-1]["hash"]

    # a move made in MLflow behind llmops' back disagrees with the history
    reg.client.set_registered_model_alias(model_name, "production", "3")
    assert any("aliases: production -> 3" in p for p in reg.verify_alias_history())
    reg.client.set_registered_model_alias(model_name, "production", "1")
    # an edited history entry breaks the chain
    key = "llmops.alias_move.00000001"
    entry = json.loads(reg.client.get_registered_model(model_name).tags[key])
    reg.client.set_registered_model_tag(model_name, key, json.dumps({**entry, "reason": "approved by the board"}))
    assert any("hash does not match" in p for p in reg.verify_alias_history())


def test_an_alias_race_between_two_releases_is_refused(mlflow_server: Server, model_name: str, tmp_path: Path,
                                                       artifacts: dict[str, Path]) -> None:
    a = MlflowRegistry(mlflow_server.uri, tmp_path / "a", name=model_name)
    b = MlflowRegistry(mlflow_server.uri, tmp_path / "b", name=model_name)
    for _ in range(3):
        a.register(artifacts, {})
    a.set_alias("production", "1", reason="first")

    # both releases read production = 1; the second to move it is refused, nothing moved
    b.set_alias("production", "2", reason="release b", expected="1")
    before = a.alias_history()
    with pytest.raises(AliasConflict, match="production points at version 2, not the expected 1"):
        a.set_alias("production", "3", reason="release a", expected="1")
    assert a.aliases() == {"production": "2", "previous": "1"} and a.alias_history() == before

    # truly concurrent: exactly one of two threads wins
    outcomes: dict[str, str] = {}

    def release(reg: MlflowRegistry, version: str) -> None:
        try:
            reg.set_alias("production", version, reason=f"release {version}", expected="2")
            outcomes[version] = "moved"
        except AliasConflict:
            outcomes[version] = "refused"

    threads = [threading.Thread(target=release, args=(reg, v)) for reg, v in ((a, "1"), (b, "3"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["moved", "refused"]
    winner = next(v for v, o in outcomes.items() if o == "moved")
    assert a.aliases()["production"] == winner and a.verify_alias_history() == []

    # a held lock (a mover that died) is refused after the timeout, naming the holder
    a.client.create_registered_model(f"{model_name}.alias-lock", tags={"holder": "crashed@ci", "since": "t0"})
    impatient = MlflowRegistry(mlflow_server.uri, tmp_path / "c", name=model_name, lock_timeout=0.5)
    with pytest.raises(AliasConflict, match="crashed@ci"):
        impatient.set_alias("candidate", "3")
    a.client.delete_registered_model(f"{model_name}.alias-lock")
    assert impatient.set_alias("candidate", "3")["to"] == "3"


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(InputError, match=f"MLflow server at {uri} is unreachable"):
        MlflowRegistry(uri, tmp_path).versions()
    assert time.monotonic() - started < 10
    from llmops.cli import main

    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMOPS_REGISTRY_URI", uri)
    assert main(["registry", "list"]) == 2
    assert "unreachable" in capsys.readouterr().err
    monkeypatch.setenv("LLMOPS_REGISTRY_URI", "file:///tmp/registry")
    assert main(["registry", "list"]) == 2
    assert "must be an http(s)://" in capsys.readouterr().err


def test_without_a_uri_the_local_folder_and_no_tracking(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    from llmops.jobs.pr_gate import resolve_model

    settings = Settings(home=tmp_path / "home")
    assert settings.registry_uri is None  # tests/conftest.py unsets LLMOPS_REGISTRY_URI
    assert log_training_run(settings, tmp_path, name="x", config={}, log_history=[], metrics={}) is None
    assert training_run_ref(tmp_path) is None
    reg = open_registry(settings)
    assert type(reg).__name__ == "Registry"
    reg.set_alias("candidate", reg.register(artifacts, {}).version)
    # the PR gate's comment says which model it used, and that no shared registry is configured
    assert resolve_model(settings, echo=lambda _: None).description == (
        "registry candidate (version 1) of the local registry: no shared registry (LLMOPS_REGISTRY_URI)")


def test_a_second_checkout_uses_what_the_first_released_and_trained(
        mlflow_server: Server, model_name: str, tmp_path: Path, artifacts: dict[str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    from governance.apikeys import KeyStore, key_file
    from governance.audit import audit_log_path, read_entries
    from llmops.cli import main
    from llmops.jobs.pr_gate import resolve_model

    first = Settings(home=tmp_path / "checkout-a", registry_uri=mlflow_server.uri, registry_model=model_name)
    second = Settings(home=tmp_path / "checkout-b", registry_uri=mlflow_server.uri, registry_model=model_name)

    def cli(checkout: Settings, *args: str, api_key: str | None = None) -> int:
        """`llmops ARGS` run in that checkout: its settings are the command's LLMOPS_* environment,
        for this one call."""
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LLMOPS_HOME", str(checkout.home))
            mp.setenv("LLMOPS_REGISTRY_URI", str(checkout.registry_uri))
            mp.setenv("LLMOPS_REGISTRY_MODEL", checkout.registry_model)
            if api_key is None:
                mp.delenv("LLMOPS_API_KEY", raising=False)
            else:
                mp.setenv("LLMOPS_API_KEY", api_key)
            return main(list(args))

    # checkout A: a training run is logged (the hook training/finetune.py calls), then registered
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "loss_curve.png").write_bytes(b"png")
    (run_dir / "metrics.json").write_text('{"eval_loss": 1.4}')
    history = [{"loss": 2.5, "learning_rate": 1e-4, "epoch": 0.5, "step": 1},
               {"loss": 1.75, "learning_rate": 5e-5, "epoch": 1.0, "step": 2},
               {"eval_loss": 1.4, "epoch": 1.0, "step": 2}]
    ref = log_training_run(first, run_dir, name="train-1", config={"lora_r": 8, "_resolved": {"prompt_sha256": "p"}},
                           log_history=history, metrics={"eval_loss": 1.4, "perplexity": 4.06})
    assert ref is not None and training_run_ref(run_dir) == ref
    lineage = {"metrics": {"eval_loss": 1.4, "rule_pass_rate": 0.9}, "training_run": ref}
    onnx = tmp_path / "src" / "onnx" / "fp32"
    onnx.mkdir(parents=True)
    (onnx / "model.onnx").write_bytes(b"onnx")
    mv = open_registry(first).register({**artifacts, "onnx": tmp_path / "src" / "onnx"}, lineage)
    manager_key = KeyStore(key_file(first)).create("release-manager", "oncall")[0]
    assert cli(first, "registry", "alias", "production", mv.version, "--reason", "released from checkout A",
               api_key=manager_key) == 0
    moves = [e for _, e in read_entries(audit_log_path(first)) if e and e["action"] == "registry.alias"]
    assert moves[-1]["details"]["alias_history_hash"] == open_registry(first).alias_head()
    assert cli(first, "audit", "verify", "--registry-anchors", api_key=manager_key) == 0

    # checkout B: another home, the same server, no key
    reg = open_registry(second)
    assert reg.resolve("production") == mv.version
    model = resolve_model(second, echo=lambda _: None)  # what the PR gate evaluates
    assert model.description == f"registry production (version {mv.version}) from the shared registry {mlflow_server.uri}"
    assert (model.model_dir / "model.onnx").read_bytes() == b"onnx"
    assert model.model_dir.is_relative_to(second.registry_dir)
    capsys.readouterr()
    assert cli(second, "registry", "show", "production") == 0
    assert json.loads(capsys.readouterr().out)["training_run"]["run_id"] == ref["run_id"]
    assert cli(second, "registry", "show", "production", "--manifest-sha256") == 0  # pr.yml's cache key
    assert capsys.readouterr().out.strip() == reg.client.get_model_version(model_name, mv.version).tags[
        "llmops.manifest_sha256"]

    run = reg.training_run("production")
    assert run["run_id"] == ref["run_id"] and run["name"] == "train-1"
    assert run["loss"] == [(1, 2.5), (2, 1.75)]
    assert run["metrics"]["eval_loss"] == pytest.approx(1.4) and run["metrics"]["rule_pass_rate"] == 0.9
    assert run["params"]["lora_r"] == "8" and run["params"]["resolved.prompt_sha256"] == "p"
    listed = {f.path for f in reg.client.list_artifacts(ref["run_id"])}
    assert {"loss_curve.png", "metrics.json", "registry"} <= listed
