"""API keys: create/authenticate/revoke, only hashes on disk, secrets never printed or logged."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from governance.apikeys import (
    AuthenticationError,
    KeyStore,
    auth_headers,
    authenticate,
    current_principal,
    key_file,
)
from governance.audit import audit_log_path, read_entries, verify
from governance.redaction import (
    KEY_PATTERN,
    install_log_redaction,
    is_secret_field,
    redact,
    redact_headers,
    scrub,
)
from llmops.cli import COMMANDS, main
from llmops.errors import InputError
from llmops.settings import Settings


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMOPS_API_KEY", raising=False)
    # The lead registers "keys" in llmops/cli/__init__.py; until then the tests add it themselves.
    monkeypatch.setitem(COMMANDS, "keys", "llmops.cli.governance:keys")


def _other_secret(key: str) -> str:
    return key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")


def test_create_authenticate_revoke(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "apikeys.json")
    key, record = store.create("release-manager", "ci-release")
    assert KEY_PATTERN.fullmatch(key) and key.startswith(f"llm_{record.key_id}_")
    principal = store.authenticate(key)
    assert (principal.name, principal.role, principal.key_id) == ("ci-release", "release-manager", record.key_id)

    server = KeyStore(tmp_path / "apikeys.json")  # a long-lived reader, like the API server's
    assert server.authenticate(key).role == "release-manager"
    store.revoke(record.key_id)
    with pytest.raises(AuthenticationError, match="invalid or revoked"):
        server.authenticate(key)  # sees the revoke without a restart
    assert store.list()[0].revoked is not None


@pytest.mark.parametrize("make_bad", [
    _other_secret,                                       # right id, wrong secret
    lambda k: "llm_000000000000_" + k.split("_", 2)[2],  # unknown id, real secret
    lambda k: k[:20],                                    # truncated
    lambda k: "",                                        # missing
    lambda k: k.replace("llm_", "sk_"),                  # foreign format
])
def test_wrong_keys_are_rejected(tmp_path: Path, make_bad) -> None:
    store = KeyStore(tmp_path / "apikeys.json")
    key, _ = store.create("admin", "ops")
    with pytest.raises(AuthenticationError):
        store.authenticate(make_bad(key))


def test_key_file_holds_only_hashes_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "apikeys.json"
    store = KeyStore(path)
    keys = [store.create(role, f"k-{role}")[0] for role in ("admin", "user")]
    text = path.read_text(encoding="utf-8")
    for key in keys:
        assert key not in text and key.split("_", 2)[2] not in text
    assert {r["role"] for r in json.loads(text)["keys"]} == {"admin", "user"}
    assert path.stat().st_mode & 0o077 == 0  # mode 0600


def test_bad_role_name_and_broken_file_are_input_errors(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "apikeys.json")
    with pytest.raises(InputError, match="unknown role 'root'"):
        store.create("root", "x")
    with pytest.raises(InputError, match="1-100 printable"):
        store.create("user", "  ")
    (tmp_path / "apikeys.json").write_text('{"schema": 1, "keys": [{"key_id": "x"}]}', encoding="utf-8")
    with pytest.raises(InputError, match=r"keys\[0\]\.name"):
        store.list()


def test_redaction_of_text_headers_details_and_logs() -> None:
    key = "llm_0123456789ab_" + "x" * 43
    assert redact(f"auth failed for {key}!") == "auth failed for llm_0123456789ab_***!"
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    headers = redact_headers({"Authorization": f"Bearer {key}", "X-API-Key": "k", "User-Agent": f"bot {key}"})
    assert headers == {"Authorization": "***", "X-API-Key": "***", "User-Agent": "bot llm_0123456789ab_***"}
    assert scrub({"password": "p", "max_tokens": 5, "key_id": "0123456789ab", "x": [key]}) == {
        "password": "***", "max_tokens": 5, "key_id": "0123456789ab", "x": ["llm_0123456789ab_***"]}
    assert is_secret_field("HF_TOKEN") and is_secret_field("client-secret") and not is_secret_field("tokens")

    logger = logging.getLogger("test.apikeys.redaction")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        install_log_redaction(logger)
        logger.warning("headers %s", {"authorization": f"Bearer {key}"})
        logging.getLogger("test.apikeys.redaction.child").warning("key=%s", key)  # propagated record
    finally:
        logger.removeHandler(handler)
    assert "x" * 43 not in stream.getvalue() and stream.getvalue().count("***") == 2


def test_env_key_headers_and_module_authenticate(llmops_home: Path) -> None:
    settings = Settings(home=llmops_home)  # no LLMOPS_API_KEY (the autouse fixture unsets it)
    assert auth_headers(settings) == {}
    key, _ = KeyStore(key_file(settings)).create("user", "app")
    assert auth_headers(Settings(home=llmops_home, api_key=key)) == {"Authorization": f"Bearer {key}"}
    assert authenticate(key, settings=settings).name == "app"


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_set_but_empty_key_fails_closed(llmops_home: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], blank: str) -> None:
    # `LLMOPS_API_KEY: ${{ secrets.LLMOPS_API_KEY }}` with the secret missing: never the local admin.
    settings = Settings(home=llmops_home, api_key=blank)
    with pytest.raises(AuthenticationError, match="set but empty"):
        current_principal(settings=settings, local_role="admin")
    with pytest.raises(AuthenticationError, match="set but empty"):
        auth_headers(settings)
    assert current_principal(settings=Settings(home=llmops_home), local_role="admin").role == "admin"
    # the same through the CLI's environment: a blank variable is a set key, not an unset one
    monkeypatch.setenv("LLMOPS_API_KEY", blank)
    assert main(["keys", "whoami"]) == 2
    assert "set but empty" in capsys.readouterr().err


def test_cli_create_list_revoke(llmops_home: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["keys", "create", "--role", "release-manager", "--name", "ci"]) == 0
    key = capsys.readouterr().out.strip()
    assert KEY_PATTERN.fullmatch(key)
    key_id, secret = key.split("_", 2)[1:]
    assert main(["keys", "create", "--role", "user", "--name", "app"]) == 0
    user_key = capsys.readouterr().out.strip()

    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "release-manager" in listing and "active" in listing
    assert secret not in listing and user_key.split("_", 2)[2] not in listing

    monkeypatch.setenv("LLMOPS_API_KEY", user_key)  # a user may not manage keys
    assert main(["keys", "revoke", key_id]) == 2
    assert "may not 'keys.manage'" in capsys.readouterr().err
    monkeypatch.setenv("LLMOPS_API_KEY", _other_secret(user_key))
    assert main(["keys", "list"]) == 2
    monkeypatch.delenv("LLMOPS_API_KEY")

    assert main(["keys", "revoke", key_id, "--reason", "rotated"]) == 0
    assert main(["keys", "revoke", "ffffffffffff"]) == 2
    settings = Settings(home=llmops_home)  # the store the CLI used (LLMOPS_HOME, the fixture)
    with pytest.raises(AuthenticationError):
        authenticate(key, settings=settings)
    log = audit_log_path(settings)
    actions = [e["action"] for _, e in read_entries(log)]
    assert actions == ["apikey.create", "apikey.create", "role.denied", "apikey.revoke"]
    assert secret not in log.read_text(encoding="utf-8") and verify(log) == []
    assert main(["keys", "create", "--role", "superuser", "--name", "x"]) == 2
