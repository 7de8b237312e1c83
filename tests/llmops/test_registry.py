"""Registry: atomic versions, checksums verified on load, alias history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmops.errors import InputError
from llmops.registry import IntegrityError, Registry


@pytest.fixture
def artifacts(tmp_path: Path) -> dict[str, Path]:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x00\x01" * 100)
    (model / "config.json").write_text('{"a": 1}')
    curve = tmp_path / "curve.png"
    curve.write_bytes(b"png")
    return {"model": model, "loss_curve.png": curve}


def test_register_writes_manifest_and_lineage(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    reg = Registry(tmp_path / "reg")
    mv = reg.register(artifacts, {"metrics": {"eval_loss": 1.5}})
    assert mv.version == "1"
    assert set(mv.manifest) == {"model/weights.bin", "model/config.json", "loss_curve.png"}
    lineage = mv.lineage
    assert lineage["metrics"] == {"eval_loss": 1.5}
    assert set(lineage["artifacts"]) == {"model", "loss_curve.png"}
    assert reg.register(artifacts, {}).version == "2"
    reg.get("1")  # verifies


def test_corrupted_file_is_refused_with_its_path(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    reg = Registry(tmp_path / "reg")
    mv = reg.register(artifacts, {})
    (mv.files / "model" / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="weights.bin.*does not match"):
        reg.get("1")


def test_missing_and_extra_files_are_refused(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    reg = Registry(tmp_path / "reg")
    mv = reg.register(artifacts, {})
    (mv.files / "model" / "config.json").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        reg.get("1")
    mv2 = reg.register(artifacts, {})
    (mv2.files / "model" / "injected.py").write_text("import os")
    with pytest.raises(IntegrityError, match="not in the manifest"):
        reg.get("2")


def test_failed_register_leaves_no_half_version(tmp_path: Path, artifacts: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry(tmp_path / "reg")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("llmops.registry.sha256_tree", boom)
    with pytest.raises(OSError):
        reg.register(artifacts, {})
    assert reg.versions() == []
    assert not any(p.name.startswith(".") and p.is_dir() for p in (tmp_path / "reg" / "versions").iterdir())


def test_missing_artifact_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        Registry(tmp_path / "reg").register({"model": tmp_path / "nope"}, {})


def release_and_roll_back(reg: Any, artifacts: dict[str, Path]) -> None:
    """Three versions; production to 1, then 2, then back to previous (either registry backend)."""
    for _ in range(3):
        reg.register(artifacts, {})
    reg.set_alias("production", "1", reason="first")
    reg.set_alias("production", "2", reason="better")
    assert reg.aliases() == {"production": "2", "previous": "1"}
    reg.set_alias("production", "previous", reason="rollback")
    assert reg.aliases() == {"production": "1", "previous": "2"}


def test_aliases_move_and_keep_history(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    reg = Registry(tmp_path / "reg")
    release_and_roll_back(reg, artifacts)
    history = reg.alias_history()
    assert [(h["alias"], h["from"], h["to"]) for h in history] == [
        ("production", None, "1"), ("previous", None, "1"), ("production", "1", "2"),
        ("previous", "1", "2"), ("production", "2", "1")]
    assert reg.resolve("production") == "1"
    with pytest.raises(InputError, match="unknown alias"):
        reg.set_alias("staging", "1")
    with pytest.raises(InputError, match="no model version or alias"):
        reg.resolve("9")
    assert json.loads((tmp_path / "reg" / "aliases.json").read_text())["production"] == "1"


def test_cli_alias_move_needs_the_permission_and_is_audited(llmops_home: Path, artifacts: dict[str, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from governance.apikeys import KeyStore, key_file
    from governance.audit import audit_log_path, read_entries, verify
    from llmops.cli import main
    from llmops.settings import Settings

    settings = Settings(home=llmops_home)  # the CLI reads LLMOPS_HOME=llmops_home (the fixture) and the key
    reg = Registry(settings.registry_dir)
    reg.register(artifacts, {})
    reg.register(artifacts, {})
    user_key, _ = KeyStore(key_file(settings)).create("user", "app")
    monkeypatch.setenv("LLMOPS_API_KEY", user_key)
    assert main(["registry", "alias", "production", "2"]) != 0  # a user may not move production
    assert "production" not in reg.aliases()
    manager_key, _ = KeyStore(key_file(settings)).create("release-manager", "oncall")
    monkeypatch.setenv("LLMOPS_API_KEY", manager_key)
    assert main(["registry", "alias", "production", "2", "--reason", "hotfix"]) == 0
    assert reg.aliases()["production"] == "2"
    log = audit_log_path(settings)
    moves = [e for _, e in read_entries(log) if e and e["action"] == "registry.alias"]
    assert len(moves) == 1 and moves[0]["actor"] == "oncall" and moves[0]["details"]["to"] == "2"
    assert any(e and e["action"] == "role.denied" for _, e in read_entries(log))
    assert verify(log) == []
    # the alias history is chained and its head is in the audit log
    assert moves[0]["details"]["alias_history_hash"] == reg.alias_head()
    assert main(["audit", "verify", "--registry-anchors"]) == 0


def test_alias_history_tampering_is_caught(llmops_home: Path, artifacts: dict[str, Path],
                                           monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from llmops.cli import main
    from llmops.settings import Settings

    reg = Registry(Settings(home=llmops_home).registry_dir)
    for _ in range(3):
        reg.register(artifacts, {})
    assert main(["registry", "alias", "production", "1", "--reason", "first"]) == 0
    assert main(["registry", "alias", "production", "2", "--reason", "second"]) == 0
    assert reg.verify_alias_history() == [] and main(["audit", "verify", "--registry-anchors"]) == 0
    path = reg.root / "alias_history.jsonl"
    clean = path.read_text()

    # a move made behind llmops' back (valid chain, no audit entry) is caught by the audit tie
    reg.set_alias("production", "3", reason="sneaky")
    assert reg.verify_alias_history() == []
    capsys.readouterr()
    assert main(["audit", "verify", "--registry-anchors"]) == 1
    assert "has no audit entry" in capsys.readouterr().out

    # an edited line breaks the chain
    path.write_text(clean.replace('"reason": "first"', '"reason": "approved by the board"'))
    (reg.root / "aliases.json").write_text('{"production": "2", "previous": "1"}')
    assert any("hash does not match" in p for p in reg.verify_alias_history())

    # a rewritten history (hashes recomputed) no longer holds the hashes the audit log recorded
    path.unlink()
    (reg.root / "aliases.json").unlink()
    reg.set_alias("production", "2", reason="history rewritten")
    assert reg.verify_alias_history() == []
    capsys.readouterr()
    assert main(["audit", "verify", "--registry-anchors"]) == 1
    assert "is gone (rewritten)" in capsys.readouterr().out

    # aliases.json edited by hand disagrees with the history
    (reg.root / "aliases.json").write_text('{"production": "3"}')
    assert any("aliases.json: production -> 3" in p for p in reg.verify_alias_history())


def test_compare_and_set_refuses_an_alias_moved_meanwhile(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    from llmops.registry import AliasConflict

    reg = Registry(tmp_path / "reg")
    for _ in range(3):
        reg.register(artifacts, {})
    reg.set_alias("production", "1", expected=None)  # none yet: expected None
    reg.set_alias("production", "2", reason="release b", expected="1")
    with pytest.raises(AliasConflict, match="points at version 2, not the expected 1"):
        reg.set_alias("production", "3", reason="release a", expected="1")
    assert reg.aliases() == {"production": "2", "previous": "1"} and len(reg.alias_history()) == 3
    assert reg.verify_alias_history() == []
