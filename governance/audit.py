"""The audit log: append-only, hash-chained JSONL (default `<home>/audit/audit.jsonl`).

    llmops audit verify                  # exit 0 intact, 1 tampered, 2 missing/unreadable
    llmops audit show --tail 20 --action release

Every stage records what it did with one call:

    audit_event("rollback", actor=p.name, role=p.role, target="production", details={...}, reason=...)

An entry is {seq, time, actor, role, action, target, details, reason, prev_hash, hash}, where
hash = sha256 of the canonical JSON (sorted keys, no spaces, UTF-8) of the entry without `hash`
and prev_hash is the previous entry's hash (64 zeros for seq 1). Editing an entry breaks its hash;
removing, reordering or forging one (even with a recomputed hash) breaks the seq order or the next
entry's prev_hash. What a chain alone cannot show is the removal of the newest entries, or a
rewrite of everything after some point; for that, keep the head (`llmops audit head`) somewhere
else (a release job's log, the lineage record) and check it with `llmops audit verify --anchor`.

Appends are safe across processes: flock on the log, read the last line under the lock, write
one line with a single write(2) on an O_APPEND descriptor, fsync. Details are scrubbed of secrets
(scrub, below) before they are hashed, so a secret never reaches the file.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance.redaction import redact, scrub
from llmops.errors import InputError
from llmops.settings import Settings

GENESIS = "0" * 64
FIELDS = ("seq", "time", "actor", "role", "action", "target", "details", "reason", "prev_hash", "hash")
# The actions stages record today; any dotted lower-case name is accepted, so a new stage needs
# no change here. The list is documentation and feeds `llmops audit show --action` help.
ACTIONS = ("train.run", "registry.register", "registry.alias", "release.start", "release.promote",
           "release.abort", "rollback", "deploy.weights", "deploy.load", "role.denied",
           "apikey.create", "apikey.revoke")
_ACTION = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TAIL_BLOCK = 64 * 1024


class AuditError(InputError):
    """The log cannot be appended to (its last line is garbled) or read."""


@dataclass(frozen=True)
class AuditProblem:
    """One sign of tampering or damage: the 1-based line and the entry's seq where known."""

    line: int | None
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "log"
        if self.seq is not None:
            where += f" (seq {self.seq})"
        return f"{where}: {self.message}"


def audit_log_path(settings: Settings | None = None) -> Path:
    return (settings or Settings.load()).home / "audit" / "audit.jsonl"


def canonical_bytes(entry: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed: every field but `hash`, sorted keys, compact, UTF-8."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def entry_hash(entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(entry)).hexdigest()


def _last_line(fd: int) -> bytes | None:
    """The file's last line (with its newline if it has one), reading backwards from the end."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    tail = b""
    pos = size
    while pos > 0:
        start = max(0, pos - _TAIL_BLOCK)
        tail = os.pread(fd, pos - start, start) + tail
        pos = start
        cut = tail.rfind(b"\n", 0, len(tail) - 1)  # a newline before the last byte ends the line before
        if cut >= 0:
            return tail[cut + 1:]
    return tail


def _link_of(last: bytes | None, path: Path) -> tuple[int, str]:
    """(seq, hash) of the last entry; a garbled tail stops the append rather than fork the chain."""
    if last is None:
        return 0, GENESIS
    problem = "its last line does not end with a newline (a truncated write?)"
    if last.endswith(b"\n"):
        try:
            entry = json.loads(last)
            seq, digest = entry["seq"], entry["hash"]
            if isinstance(seq, int) and isinstance(digest, str) and _HEX64.match(digest):
                return seq, digest
            problem = "its last entry has no valid seq/hash"
        except (ValueError, TypeError, KeyError):
            problem = "its last line is not a valid entry"
    raise AuditError(f"cannot append to the audit log: {problem}; run `llmops audit verify`", file=str(path))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append(path: Path, action: str, *, actor: str, role: str = "", target: str = "",
           details: Mapping[str, Any] | None = None, reason: str = "") -> dict[str, Any]:
    """Append one entry under an exclusive lock and return it (with seq and hash)."""
    if not _ACTION.match(action):
        raise InputError(f"bad audit action {action!r}: dotted lower-case words like 'release.start'",
                         field="action")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    # Round-trip through JSON so the entry we hash is exactly what a reader will parse back
    # (a Path or datetime in details becomes its string form in both).
    clean = json.loads(json.dumps(scrub(dict(details or {})), default=str, allow_nan=False))
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close()
        seq, prev_hash = _link_of(_last_line(fd), path)
        entry: dict[str, Any] = {
            "seq": seq + 1,
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "actor": redact(str(actor)),
            "role": str(role or ""),
            "action": action,
            "target": redact(str(target or "")),
            "details": clean,
            "reason": redact(str(reason or "")),
            "prev_hash": prev_hash,
        }
        entry["hash"] = entry_hash(entry)
        line = json.dumps({k: entry[k] for k in FIELDS}, separators=(",", ":"), ensure_ascii=False) + "\n"
        _write_all(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:  # make the new file's directory entry durable too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return entry


def local_actor() -> str:
    """A name for the person at the keyboard (audit only, not an identity proof)."""
    if os.environ.get("GITHUB_ACTOR"):
        return f"github:{os.environ['GITHUB_ACTOR']}"
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry in some containers
        return "local:unknown"


def audit_event(action: str, *, actor: str | None = None, role: str | None = None, target: str = "",
                details: Mapping[str, Any] | None = None, reason: str = "",
                settings: Settings | None = None, path: Path | None = None) -> dict[str, Any]:
    """Record `action` in the project's audit log (`<home>/audit/audit.jsonl` unless `path`).

    actor defaults to the local operator (GITHUB_ACTOR in CI, else the OS user)."""
    return append(Path(path) if path else audit_log_path(settings), action, actor=actor or local_actor(),
                  role=role or "", target=target, details=details, reason=reason)


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise InputError("audit log not found", file=str(path))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"audit log unreadable: {exc.strerror or exc}", file=str(path)) from exc


def _lines(raw: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(1-based line number, bytes without newline, ended with a newline)."""
    parts = raw.split(b"\n")
    for i, part in enumerate(parts[:-1]):
        yield i + 1, part, True
    if parts[-1]:
        yield len(parts), parts[-1], False


def _shape_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "not a JSON object"
    missing = [f for f in FIELDS if f not in entry]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    extra = [f for f in entry if f not in FIELDS]
    if extra:
        return f"unexpected field(s): {', '.join(extra)}"
    if not isinstance(entry["seq"], int) or isinstance(entry["seq"], bool) or entry["seq"] < 1:
        return "field seq is not a positive integer"
    for name in ("hash", "prev_hash"):
        if not isinstance(entry[name], str) or not _HEX64.match(entry[name]):
            return f"field {name} is not 64 hex characters"
    if not isinstance(entry["details"], dict):
        return "field details is not an object"
    for name in ("time", "actor", "role", "action", "target", "reason"):
        if not isinstance(entry[name], str):
            return f"field {name} is not a string"
    return None


def verify(path: Path, *, anchor: tuple[int, str] | None = None) -> list[AuditProblem]:
    """Every sign of tampering or damage in the log; [] when intact. Missing/unreadable: InputError.

    Checks per line: valid JSON object with exactly FIELDS; hash = sha256 of the canonical entry
    (catches edits); seq = highest seq so far + 1 (catches removals, reorders, duplicates);
    prev_hash = hash of the entry with seq - 1, GENESIS for seq 1 (catches a forged entry whose own
    hash was recomputed, at the entry after it). `anchor` (seq, hash) must be present and equal
    (catches truncation of the newest entries and wholesale rewrites).
    """
    raw = _read_bytes(path)
    problems: list[AuditProblem] = []
    hash_by_seq: dict[int, tuple[int, str]] = {}  # seq -> (line, hash) of the first entry with it
    max_seq = 0
    after_garbled = False
    for lineno, data, has_newline in _lines(raw):
        if not data.strip():
            problems.append(AuditProblem(lineno, None, "blank line"))
            continue
        try:
            entry = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            problems.append(AuditProblem(lineno, None, "not valid JSON (truncated or garbled line)"))
            after_garbled = True
            continue
        shape = _shape_problem(entry)
        if shape:
            seq = entry.get("seq") if isinstance(entry, dict) and isinstance(entry.get("seq"), int) else None
            problems.append(AuditProblem(lineno, seq, f"malformed entry: {shape}"))
            after_garbled = True
            continue
        seq = entry["seq"]
        if not has_newline:
            problems.append(AuditProblem(lineno, seq, "last line has no newline (truncated write or edit)"))
        if entry_hash(entry) != entry["hash"]:
            problems.append(AuditProblem(lineno, seq, "hash mismatch: the entry was edited after it was written"))
        expected = max_seq + 1
        # A garbled line probably was entry `expected`; don't report the same loss twice.
        if seq != expected and not (after_garbled and seq == expected + 1):
            if seq in hash_by_seq:
                first_line = hash_by_seq[seq][0]
                problems.append(AuditProblem(lineno, seq, f"duplicate seq (first on line {first_line})"))
            elif seq < expected:
                problems.append(AuditProblem(lineno, seq, f"out of order: seq {seq} after seq {max_seq} "
                                                          "(entries reordered)"))
            else:
                problems.append(AuditProblem(lineno, seq, f"seq gap: expected {expected}, found {seq} "
                                                          "(entries removed or moved)"))
        if seq == 1:
            if entry["prev_hash"] != GENESIS:
                problems.append(AuditProblem(lineno, seq, "first entry's prev_hash is not the genesis value"))
        elif seq - 1 in hash_by_seq:
            prev_line, prev_hash = hash_by_seq[seq - 1]
            if entry["prev_hash"] != prev_hash:
                problems.append(AuditProblem(
                    lineno, seq, f"prev_hash does not match the hash of seq {seq - 1} (line {prev_line}): "
                                 "that entry was rewritten, or this one forged"))
        hash_by_seq.setdefault(seq, (lineno, entry["hash"]))
        max_seq = max(max_seq, seq)
        after_garbled = False
    if anchor is not None:
        anchor_seq, anchor_hash = anchor
        found = hash_by_seq.get(anchor_seq)
        if found is None:
            problems.append(AuditProblem(None, anchor_seq, f"anchored entry seq {anchor_seq} is missing "
                                                           f"(log ends at seq {max_seq}: truncated?)"))
        elif found[1] != anchor_hash:
            problems.append(AuditProblem(found[0], anchor_seq, "hash differs from the anchor (log rewritten)"))
    return problems


def parse_anchor(text: str) -> tuple[int, str]:
    """'SEQ:HASH' (as printed by `llmops audit head`) -> (seq, hash)."""
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or not _HEX64.match(digest):
        raise InputError(f"anchor must be SEQ:HASH with a 64-hex hash, got {text!r}", field="anchor")
    return int(seq), digest


def read_entries(path: Path) -> list[tuple[int, dict[str, Any] | None]]:
    """(line, entry) for every non-blank line; entry None where the line is not valid JSON.
    For display only: it does not verify (use verify())."""
    out: list[tuple[int, dict[str, Any] | None]] = []
    for lineno, data, _ in _lines(_read_bytes(path)):
        if not data.strip():
            continue
        try:
            entry = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            entry = None
        out.append((lineno, entry if isinstance(entry, dict) else None))
    return out


def current_anchor(settings: Settings | None = None) -> str | None:
    """SEQ:HASH of the log's newest entry (None without a log): what a registered version's lineage
    records, so that a later cut or rewrite of the log before that point is detectable."""
    path = audit_log_path(settings)
    last = head(path) if path.is_file() else None
    return None if last is None else f"{last[0]}:{last[1]}"


def head(path: Path) -> tuple[int, str] | None:
    """(seq, hash) of the last entry, or None for an empty log."""
    path = Path(path)
    if not path.is_file():
        raise InputError("audit log not found", file=str(path))
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        last = _last_line(fd)
    finally:
        os.close(fd)
    return None if last is None else _link_of(last, path)
