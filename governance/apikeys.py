"""API keys that carry a role, stored only as hashes (redaction of secrets in logs: governance/redaction.py).

    llmops keys create --role user --name docs-bot     # prints the key once
    llmops keys list
    llmops keys revoke 3f9c0a1b2d4e

A key looks like `llm_<key_id>_<secret>`: key_id is 12 hex characters (not secret: it names the
key in lists, logs and the audit log), secret is secrets.token_urlsafe(32) (256 random bits).
The key file (default `<home>/apikeys.json`, mode 0600 from mkstemp, written atomically under a
lock) holds per key: key_id, name, role, sha256 of the whole key, created, revoked.

Why plain sha256 and not scrypt/pbkdf2: slow salted KDFs protect low-entropy passwords from
guessing. A 256-bit random secret cannot be guessed from its hash however fast the hash is, and
the server checks a key on every request, where a 50 ms KDF would be the bottleneck. The hash
covers the key_id too, so a secret cannot be moved to another key's id.

CI passes a key in LLMOPS_API_KEY; `current_principal()` resolves it for guarded CLI commands.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from governance.audit import audit_event, local_actor
from governance.redaction import KEY_PATTERN
from llmops.errors import InputError
from llmops.files import atomic_write_json
from llmops.settings import Settings

ENV_KEY = "LLMOPS_API_KEY"
KEY_FILE = "apikeys.json"
# The roles a key can carry; governance/policy.py (which re-exports ROLES) gives each its permissions.
ROLES: tuple[str, ...] = ("admin", "release-manager", "developer", "user")
# Compared in authenticate() when the key_id is unknown, so a miss costs the same as a wrong secret.
_ABSENT_KEY_HASH = hashlib.sha256(b"no such key").hexdigest()


class AuthenticationError(InputError):
    """A missing, malformed, unknown or revoked API key. The message never says which."""


@dataclass(frozen=True)
class Principal:
    """Who is acting: the holder of an API key, or the local operator (key_id None)."""

    name: str
    role: str
    key_id: str | None = None


class KeyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_id: str
    name: str
    role: str
    sha256: str
    created: str
    revoked: str | None = None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_file(settings: Settings | None = None) -> Path:
    settings = settings or Settings.load()
    return Path(settings.keys_file) if settings.keys_file else settings.home / KEY_FILE


class KeyStore:
    """The key file. Reads are cached and refreshed when the file changes, so a revoke made by
    `llmops keys revoke` takes effect in a running server on its next request."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._records: dict[str, KeyRecord] = {}

    def _read(self) -> dict[str, KeyRecord]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._records = None, {}
            return self._records
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return self._records
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"key file unreadable: {exc}", file=str(self.path)) from exc
        if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("keys"), list):
            raise InputError("key file must be {\"schema\": 1, \"keys\": [...]}", file=str(self.path))
        records: dict[str, KeyRecord] = {}
        for i, row in enumerate(data["keys"]):
            try:
                record = KeyRecord.model_validate(row)
            except ValidationError as exc:
                err = exc.errors()[0]
                field = f"keys[{i}]." + ".".join(str(p) for p in err["loc"])
                raise InputError(f"bad key record: {err['msg']}", file=str(self.path), field=field) from exc
            records[record.key_id] = record
        self._stamp, self._records = stamp, records
        return records

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, KeyRecord]]:
        """Read-modify-write under an exclusive lock on a sidecar file (the key file is replaced
        by rename, so locking the key file itself would lock a file that is about to go away)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._stamp = None  # another process may have written since our last read
                records = dict(self._read())
                yield records
                atomic_write_json(self.path, {"schema": 1, "keys": [r.model_dump() for r in records.values()]},
                                  mode=0o600)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def create(self, role: str, name: str) -> tuple[str, KeyRecord]:
        """A new key for `role`; returns (plaintext key, record). The plaintext exists only here."""
        if role not in ROLES:
            raise InputError(f"unknown role {role!r}; known: {', '.join(ROLES)}", field="role")
        name = name.strip()
        if not name or len(name) > 100 or not name.isprintable():
            raise InputError("key name must be 1-100 printable characters", field="name")
        with self._locked() as records:
            key_id = secrets.token_hex(6)
            while key_id in records:  # 48 bits: a clash is near impossible, but cheap to rule out
                key_id = secrets.token_hex(6)
            key = f"llm_{key_id}_{secrets.token_urlsafe(32)}"
            record = KeyRecord(key_id=key_id, name=name, role=role, sha256=_hash(key), created=_now())
            records[key_id] = record
        return key, record

    def authenticate(self, key: str | None) -> Principal:
        """The principal holding `key`; AuthenticationError when it is malformed, unknown or revoked."""
        key = (key or "").strip()
        match = KEY_PATTERN.fullmatch(key)
        record = self._read().get(match.group(1)) if match else None
        # Always one constant-time comparison, whether or not the id exists.
        ok = hmac.compare_digest(_hash(key), record.sha256 if record else _ABSENT_KEY_HASH)
        if not ok or record is None or record.revoked:
            raise AuthenticationError("invalid or revoked API key")
        return Principal(name=record.name, role=record.role, key_id=record.key_id)

    def revoke(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (kept in the file, so that the audit log's key ids stay explainable)."""
        with self._locked() as records:
            record = records.get(key_id)
            if record is None:
                raise InputError(f"no key with id {key_id!r}", file=str(self.path), field="key_id")
            if record.revoked is None:
                record = record.model_copy(update={"revoked": _now()})
                records[key_id] = record
        return record

    def list(self) -> list[KeyRecord]:
        return sorted(self._read().values(), key=lambda r: (r.created, r.key_id))


def configured_key(settings: Settings | None = None) -> str | None:
    """The caller's key from LLMOPS_API_KEY (`Settings.api_key`); None when the variable is unset.

    Set but blank fails closed: `LLMOPS_API_KEY: ${{ secrets.X }}` is "" when the secret is missing,
    and falling back to the local operator would run a release as local admin.
    """
    value = (settings or Settings.load()).api_key
    if value is None:
        return None
    key = value.get_secret_value().strip()
    if not key:
        raise AuthenticationError(f"{ENV_KEY} is set but empty (a missing CI secret?): refusing to fall back to "
                                  "the local operator; set a key or unset the variable")
    return key


def current_principal(*, settings: Settings | None = None, local_role: str | None = "admin") -> Principal:
    """The holder of LLMOPS_API_KEY when set, else the local operator with `local_role`."""
    settings = settings or Settings.load()
    key = configured_key(settings)
    if key is not None:
        return KeyStore(key_file(settings)).authenticate(key)
    if local_role is None:
        raise AuthenticationError(f"this command needs an API key in {ENV_KEY} "
                                  "(the policy's local_role is null)")
    return Principal(name=local_actor(), role=local_role, key_id=None)


def auth_headers(settings: Settings | None = None) -> dict[str, str]:
    """Headers for admin calls from the CLI: the key from LLMOPS_API_KEY, or none (blank: an error)."""
    key = configured_key(settings)
    return {"Authorization": f"Bearer {key}"} if key is not None else {}


def create_key(role: str, name: str, *, by: Principal | None = None, settings: Settings | None = None) -> str:
    """Create a key and audit it (`apikey.create`); returns the plaintext, to be shown once."""
    settings = settings or Settings.load()
    key, record = KeyStore(key_file(settings)).create(role, name)
    by = by or Principal(local_actor(), "local")
    audit_event("apikey.create", actor=by.name, role=by.role, target=record.key_id,
                details={"name": record.name, "key_role": record.role}, settings=settings)
    return key


def revoke_key(key_id: str, *, by: Principal | None = None, reason: str = "",
               settings: Settings | None = None) -> KeyRecord:
    """Revoke a key and audit it (`apikey.revoke`)."""
    settings = settings or Settings.load()
    record = KeyStore(key_file(settings)).revoke(key_id)
    by = by or Principal(local_actor(), "local")
    audit_event("apikey.revoke", actor=by.name, role=by.role, target=key_id,
                details={"name": record.name, "key_role": record.role}, reason=reason, settings=settings)
    return record


def authenticate(key: str | None, *, settings: Settings | None = None) -> Principal:
    """One-off check against the default key file (a server should keep one KeyStore instead)."""
    return KeyStore(key_file(settings)).authenticate(key)
