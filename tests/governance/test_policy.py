"""The role policy: who may do what, refusals are audited, and a bad policy file is named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from governance.apikeys import ROLES, KeyStore, key_file
from governance.audit import audit_log_path, read_entries
from governance.policy import PERMISSIONS, PermissionDenied, authorize, load_policy, require
from llmops.cli import main
from llmops.errors import InputError
from llmops.settings import Settings

REPO_POLICY = Path(__file__).resolve().parents[2] / "governance" / "policy.yaml"


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMOPS_API_KEY", raising=False)


@pytest.fixture
def policy():
    return load_policy(REPO_POLICY)


@pytest.mark.parametrize("permission", ["release", "rollback", "deploy.weights", "deploy.load", "keys.manage"])
def test_user_cannot_ship_or_change_traffic(policy, permission: str) -> None:
    assert not policy.allows("user", permission)


def test_roles_hold_what_their_job_needs(policy) -> None:
    assert policy.allows("user", "chat") and policy.allows("user", "feedback")
    assert policy.allows("release-manager", "release") and policy.allows("release-manager", "rollback")
    assert policy.allows("release-manager", "deploy.weights")
    assert not policy.allows("release-manager", "keys.manage")
    assert policy.allows("developer", "train") and not policy.allows("developer", "release")
    assert not policy.allows("developer", "rollback")
    assert all(policy.allows("admin", p) for p in PERMISSIONS)
    assert policy.roles_with("rollback") == ["admin", "release-manager"]


def test_unknown_role_holds_nothing_and_unknown_permission_is_a_bug(policy) -> None:
    assert not policy.allows("root", "chat")
    with pytest.raises(InputError, match="unknown permission 'relase'"):
        policy.allows("admin", "relase")


def test_require_denies_with_an_input_error_and_audits_it(policy, llmops_home: Path) -> None:
    settings = Settings(home=llmops_home)
    require("release-manager", "rollback", actor="alice", policy=policy, settings=settings)
    assert not audit_log_path(settings).exists()  # an allowed action writes nothing here
    with pytest.raises(PermissionDenied) as info:
        require("user", "rollback", actor="bob", target="production", policy=policy, settings=settings)
    assert isinstance(info.value, InputError)
    assert "bob" in str(info.value) and "'rollback'" in str(info.value) and "release-manager" in str(info.value)
    [(_, entry)] = read_entries(audit_log_path(settings))
    assert (entry["action"], entry["actor"], entry["role"], entry["target"]) == (
        "role.denied", "bob", "user", "production")
    assert entry["details"] == {"permission": "rollback"}


def test_authorize_uses_the_env_key(llmops_home: Path) -> None:
    def holding(key: str) -> Settings:
        """The settings of a caller whose LLMOPS_API_KEY is `key`."""
        return Settings(home=llmops_home, api_key=key)

    store = KeyStore(key_file(Settings(home=llmops_home)))
    user_key, _ = store.create("user", "app")
    rm_key, _ = store.create("release-manager", "ci-release")
    principal = authorize("rollback", target="production", settings=holding(rm_key))
    assert (principal.name, principal.role) == ("ci-release", "release-manager")
    with pytest.raises(PermissionDenied):
        authorize("rollback", target="production", settings=holding(user_key))
    with pytest.raises(InputError, match="invalid or revoked"):
        authorize("rollback", settings=holding(rm_key[:-1] + ("A" if rm_key[-1] != "A" else "B")))


def _policy_copy(tmp_path: Path, old: str, new: str) -> Path:
    root = tmp_path / "repo"
    (root / "governance").mkdir(parents=True)
    text = REPO_POLICY.read_text(encoding="utf-8")
    assert old in text
    path = root / "governance" / "policy.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_local_role_null_requires_a_key(tmp_path: Path) -> None:
    path = _policy_copy(tmp_path, "local_role: admin", "local_role: null")
    settings = Settings(root=path.parents[1], home=tmp_path / "home")  # the policy is read from the root
    with pytest.raises(InputError, match="needs an API key in LLMOPS_API_KEY"):
        authorize("audit.read", settings=settings)


@pytest.mark.parametrize(("old", "new", "field", "message"), [
    ("[chat, feedback]\n", "[chat, feedbak]\n", "roles.user.permissions.1", "unknown value 'feedbak'"),
    ("  developer:\n", "  dev:\n", "roles.dev", "unknown key 'dev'"),
    ("[chat, completions.raw, feedback, metrics.read, audit.read, train]", "[chat, train, chat]", "roles.developer.permissions",
     "permission 'chat' is listed twice"),
    ("local_role: admin", "local_role: superuser", "local_role", "unknown role 'superuser'"),
    ("schema: 1", "schema: 1\nowner: me", "owner", "unknown key 'owner'"),
    ("    description: An application", "    descripton: An application", "roles.user.descripton",
     "unknown key 'descripton'"),
])
def test_invalid_policy_names_file_line_and_key(tmp_path: Path, old: str, new: str, field: str,
                                                message: str) -> None:
    path = _policy_copy(tmp_path, old, new)
    with pytest.raises(InputError) as info:
        load_policy(path)
    err = info.value
    assert err.file == str(path) and err.field == field and message in str(err)
    assert err.line is not None  # the line that holds the offending key or value
    assert new.strip().split("\n")[-1] in path.read_text(encoding="utf-8").splitlines()[err.line - 1]


def test_missing_role_and_bad_yaml_are_errors(tmp_path: Path) -> None:
    path = _policy_copy(tmp_path, "  user:\n", "  userx:\n")
    with pytest.raises(InputError, match="unknown key 'userx'"):
        load_policy(path)
    text = REPO_POLICY.read_text(encoding="utf-8")
    start = text.index("  user:\n")
    path.write_text(text[:start], encoding="utf-8")
    with pytest.raises(InputError, match="role 'user' is not defined"):
        load_policy(path)
    path.write_text("roles: [unclosed\n", encoding="utf-8")
    with pytest.raises(InputError, match="invalid YAML") as info:
        load_policy(path)
    assert info.value.line == 2


def test_repo_policy_defines_every_role() -> None:
    assert set(load_policy(REPO_POLICY).roles) == set(ROLES)


def test_cli_refuses_a_user_key_with_exit_2(llmops_home: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key, _ = KeyStore(key_file(Settings(home=llmops_home))).create("user", "app")
    monkeypatch.setenv("LLMOPS_API_KEY", key)  # the CLI: the environment is the interface
    assert main(["audit", "show", "--log", str(tmp_path / "audit.jsonl")]) == 2
    assert "may not 'audit.read'" in capsys.readouterr().err
