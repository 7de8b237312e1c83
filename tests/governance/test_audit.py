"""The audit log: the chain verifies, every kind of tampering is caught at the right line and seq,
concurrent appends keep the chain, secrets never reach the file, and the CLI's exit codes."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from governance.audit import (
    GENESIS,
    AuditError,
    append,
    audit_event,
    audit_log_path,
    entry_hash,
    head,
    read_entries,
    verify,
)
from llmops.cli import main
from llmops.errors import InputError
from llmops.settings import Settings


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMOPS_API_KEY", raising=False)


def _log(tmp_path: Path, n: int = 5) -> Path:
    path = tmp_path / "audit.jsonl"
    for i in range(n):
        append(path, "release.start", actor="alice", role="release-manager", target=f"v1.{i}.0",
               details={"step": i}, reason=f"entry {i + 1}")
    return path


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines), encoding="utf-8")


def _where(problems) -> list[tuple[int | None, int | None]]:
    return [(p.line, p.seq) for p in problems]


def test_append_builds_a_chain_that_verifies(tmp_path: Path) -> None:
    path = _log(tmp_path)
    entries = [json.loads(line) for line in _lines(path)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["prev_hash"] == GENESIS
    for before, after in zip(entries, entries[1:], strict=False):
        assert after["prev_hash"] == before["hash"]
    assert all(e["hash"] == entry_hash(e) for e in entries)
    assert entries[2]["time"].endswith("+00:00") and entries[2]["reason"] == "entry 3"
    assert verify(path) == []
    assert head(path) == (5, entries[-1]["hash"])


def test_edited_entry_is_named_by_line_and_seq(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = _lines(path)
    lines[2] = lines[2].replace('"reason":"entry 3"', '"reason":"nothing to see"')
    _write(path, lines)
    problems = verify(path)
    assert _where(problems) == [(3, 3)]
    assert "hash mismatch" in problems[0].message


def test_removed_entry_is_a_seq_gap(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = _lines(path)
    del lines[2]
    _write(path, lines)
    problems = verify(path)
    assert _where(problems) == [(3, 4)]
    assert "expected 3, found 4" in problems[0].message


def test_removed_first_entry_is_caught(tmp_path: Path) -> None:
    path = _log(tmp_path)
    _write(path, _lines(path)[1:])
    assert _where(verify(path)) == [(1, 2)]


def test_swapped_entries_name_both_lines(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = _lines(path)
    lines[2], lines[3] = lines[3], lines[2]
    _write(path, lines)
    problems = verify(path)
    assert _where(problems) == [(3, 4), (4, 3)]
    assert "out of order" in problems[1].message


def test_garbled_line_is_named(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = _lines(path)
    lines[2] = lines[2][:40] + "\n"
    _write(path, lines)
    problems = verify(path)
    assert _where(problems) == [(3, None)]
    assert "not valid JSON" in problems[0].message


def test_forged_entry_with_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = _lines(path)
    forged = json.loads(lines[2])
    forged["actor"], forged["reason"] = "mallory", "approved"
    forged["hash"] = entry_hash(forged)  # its own hash is now right
    lines[2] = json.dumps(forged) + "\n"
    _write(path, lines)
    problems = verify(path)
    assert _where(problems) == [(4, 4)]
    assert "prev_hash does not match the hash of seq 3 (line 3)" in problems[0].message


def test_half_written_last_line_is_caught_and_blocks_appends(tmp_path: Path) -> None:
    path = _log(tmp_path, 3)
    path.write_text(path.read_text(encoding="utf-8") + '{"seq":4,"time":"20', encoding="utf-8")
    assert _where(verify(path)) == [(4, None)]
    with pytest.raises(AuditError, match="last line"):
        append(path, "rollback", actor="bob")


def test_anchor_catches_a_cut_tail_that_the_chain_alone_cannot(tmp_path: Path) -> None:
    path = _log(tmp_path)
    anchor = head(path)
    _write(path, _lines(path)[:3])
    assert verify(path) == []  # a clean prefix is a valid chain: the documented limit
    problems = verify(path, anchor=anchor)
    assert _where(problems) == [(None, 5)] and "truncated" in problems[0].message


def _append_many(path: str, worker: int, count: int) -> None:
    for i in range(count):
        append(Path(path), "deploy.weights", actor=f"worker-{worker}", details={"i": i})


def test_concurrent_appends_from_processes_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 10)) for w in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    entries = [e for _, e in read_entries(path)]
    assert [e["seq"] for e in entries] == list(range(1, 51))
    assert sorted((e["actor"], e["details"]["i"]) for e in entries) == sorted(
        (f"worker-{w}", i) for w in range(5) for i in range(10))
    assert verify(path) == []


def test_secrets_are_scrubbed_before_hashing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    key = "llm_0123456789ab_" + "S3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3cr3t"
    entry = append(path, "deploy.weights", actor="ci", target=f"gateway (key {key})", details={
        "api_key": "sk-live-abc", "nested": {"password": "hunter2", "Authorization": "Bearer xyz"},
        "headers": [{"x_api_key": "k1"}], "note": f"called with {key}", "max_tokens": 64, "hf_token": "hf_x",
    }, reason=f"leaked {key}")
    text = path.read_text(encoding="utf-8")
    for secret in ("sk-live-abc", "hunter2", "xyz", "k1", "S3cr3t", "hf_x"):
        assert secret not in text
    assert entry["details"]["max_tokens"] == 64
    assert entry["details"]["note"] == "called with llm_0123456789ab_***"  # the key id is kept
    assert verify(path) == []


def test_audit_event_uses_the_home_log(llmops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    entry = audit_event("rollback", role="release-manager", target="production", reason="p95 breach")
    path = audit_log_path(Settings.load())
    assert path == llmops_home / "audit" / "audit.jsonl"
    assert entry["actor"] == "github:octocat" and read_entries(path)[0][1] == entry
    with pytest.raises(InputError, match="bad audit action"):
        audit_event("Roll Back!")


def test_verify_missing_log_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        verify(tmp_path / "nope.jsonl")


def test_cli_exit_codes_and_show(llmops_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify"]) == 2  # no log yet
    for action in ("release.start", "release.promote", "rollback"):
        audit_event(action, actor="alice", role="release-manager", target="v1.0.0")
    capsys.readouterr()
    assert main(["audit", "verify"]) == 0
    assert "intact" in capsys.readouterr().out
    assert main(["audit", "show", "--action", "release"]) == 0
    out = capsys.readouterr().out
    assert "release.start" in out and "release.promote" in out and "rollback" not in out
    assert main(["audit", "show", "--tail", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "rollback" in out[0]

    path = llmops_home / "audit" / "audit.jsonl"
    assert main(["audit", "head"]) == 0
    anchor = capsys.readouterr().out.strip()
    lines = _lines(path)
    _write(path, [lines[0], lines[2]])
    assert main(["audit", "verify", "--log", str(path)]) == 1
    captured = capsys.readouterr()
    assert "line 2 (seq 3)" in captured.out and "gate failed" in captured.err
    _write(path, lines[:2])
    assert main(["audit", "verify"]) == 0
    assert main(["audit", "verify", "--anchor", anchor]) == 1
    assert main(["audit", "verify", "--anchor", "3:nothex"]) == 2


def test_a_log_rewritten_after_a_registration_fails_against_the_registry_anchor(
        llmops_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The chain alone cannot see a log that was cut and re-chained from scratch; the head that a
    # registered version recorded in its lineage can.
    from governance.audit import audit_event, audit_log_path, current_anchor
    from llmops.registry import Registry

    settings = Settings(home=llmops_home)  # the store the CLI uses too (LLMOPS_HOME, the fixture)
    for i in range(3):
        audit_event("release.promote", actor="alice", role="release-manager", target=f"v{i}", settings=settings)
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(b"w")
    Registry(settings.registry_dir).register({"model": model}, {"audit_anchor": current_anchor(settings)})
    assert main(["audit", "verify", "--registry-anchors"]) == 0
    assert "1 with an audit anchor" in capsys.readouterr().out
    log = audit_log_path(settings)
    log.unlink()  # rewrite history: a fresh, internally consistent chain
    audit_event("release.promote", actor="mallory", role="admin", target="v9", settings=settings)
    assert main(["audit", "verify"]) == 0  # the chain alone: intact
    assert main(["audit", "verify", "--registry-anchors"]) == 1
