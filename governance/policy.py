"""The role policy: which role holds which permission (governance/policy.yaml).

    python -c "from governance.policy import load_policy; print(load_policy().describe())"

Stages guard an action with one call, which also records who did it:

    principal = authorize("rollback", target="production")   # LLMOPS_API_KEY or the local role
    ...
    audit_event("rollback", actor=principal.name, role=principal.role, target=..., reason=...)

A refusal raises PermissionDenied, a subclass of InputError (the CLI exits 2 with the message),
after writing a `role.denied` entry to the audit log. Permission names are fixed here, role names
in governance.apikeys (ROLES): the YAML may only use them, so a typo is an error
naming the file, line and key, not a silent gap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from governance.apikeys import ROLES, Principal, current_principal
from governance.audit import audit_event
from llmops.config_files import load_validated_yaml
from llmops.errors import InputError
from llmops.settings import Settings

# What each permission guards; policy.yaml repeats this in its header comment.
PERMISSIONS: dict[str, str] = {
    "chat": "call the OpenAI-compatible chat API (/v1/chat/completions, /v1/models)",
    "completions.raw": "send a caller-templated prompt to /v1/completions, where only the size guards apply",
    "feedback": "send feedback about a response",
    "metrics.read": "read /metrics and the gateway state",
    "deploy.weights": "change the gateway's blue/green traffic weights",
    "deploy.load": "load a registered version into a colour",
    "release": "run a release (deploy, analyse, shift traffic, move `production`)",
    "rollback": "roll traffic and the `production` alias back",
    "registry.alias": "move a registry alias by hand",
    "audit.read": "read and verify the audit log",
    "train": "run training / the merge pipeline and register a candidate",
    "keys.manage": "create, list and revoke API keys",
}
DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")
# The same names as types, so pydantic names the offending key or list item in an error.
PermissionName = Literal[tuple(PERMISSIONS)]  # type: ignore[valid-type]
RoleName = Literal[ROLES]  # type: ignore[valid-type]



class PermissionDenied(InputError):
    """A role lacks a permission. Subclass of InputError, so the CLI exits 2 with this message."""

    def __init__(self, message: str, *, role: str, permission: str, actor: str) -> None:
        super().__init__(message)
        self.role, self.permission, self.actor = role, permission, actor


class RoleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    """One line on who holds the role."""
    permissions: list[PermissionName] = Field(default_factory=list)
    """Every permission the role holds, in full (no inheritance)."""

    @field_validator("permissions")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"permission {repeated[0]!r} is listed twice")
        return value


class Policy(BaseModel):
    """The parsed policy.yaml."""

    model_config = ConfigDict(extra="forbid")

    schema_: int = Field(1, alias="schema")
    """Schema version of the file."""
    local_role: str | None = "admin"
    """Role of a CLI user who presents no API key; None requires LLMOPS_API_KEY."""
    roles: dict[RoleName, RoleSpec]
    """Role name -> its permissions; exactly the names in ROLES."""
    _source: str = PrivateAttr("")  # the file this policy came from (for messages)

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"unsupported policy schema {value}; this code reads schema 1")
        return value

    @field_validator("local_role")
    @classmethod
    def _local_role(cls, value: str | None) -> str | None:
        if value is not None and value not in ROLES:
            raise ValueError(f"unknown role {value!r}; known: {', '.join(ROLES)}")
        return value

    @field_validator("roles")
    @classmethod
    def _every_role(cls, value: dict[str, RoleSpec]) -> dict[str, RoleSpec]:
        missing = [name for name in ROLES if name not in value]
        if missing:
            raise ValueError(f"role {missing[0]!r} is not defined; define all of: {', '.join(ROLES)}")
        return value

    def allows(self, role: str, permission: str) -> bool:
        """True when `role` holds `permission`. An unknown role holds nothing; an unknown
        permission is a programming error (InputError), so a misspelt guard cannot pass silently."""
        if permission not in PERMISSIONS:
            raise InputError(f"unknown permission {permission!r}; known: {', '.join(PERMISSIONS)}")
        spec = self.roles.get(role)
        return spec is not None and permission in spec.permissions

    def roles_with(self, permission: str) -> list[str]:
        return [name for name in ROLES if self.allows(name, permission)]

    def require(self, role: str, permission: str, *, actor: str, target: str = "",
                settings: Settings | None = None, audit: bool = True) -> None:
        """Return when allowed; otherwise write a `role.denied` audit entry and raise PermissionDenied."""
        if self.allows(role, permission):
            return
        message = (f"permission denied: {actor} (role {role!r}) may not {permission!r} "
                   f"({PERMISSIONS[permission]}); roles that may: {', '.join(self.roles_with(permission))}")
        if audit:
            audit_event("role.denied", actor=actor, role=role, target=target,
                        details={"permission": permission}, reason=message, settings=settings)
        raise PermissionDenied(message, role=role, permission=permission, actor=actor)

    def describe(self) -> str:
        lines = [f"policy {self._source or '(in memory)'}; local role: {self.local_role}"]
        for name in ROLES:
            lines.append(f"  {name:16} {', '.join(self.roles[name].permissions)}")
        return "\n".join(lines)


def policy_path(settings: Settings | None = None) -> Path:
    """The repo's governance/policy.yaml, else the copy shipped with this package."""
    settings = settings or Settings.load()
    in_repo = settings.root / "governance" / "policy.yaml"
    return in_repo if in_repo.is_file() else DEFAULT_POLICY


def load_policy(path: Path | None = None, *, settings: Settings | None = None) -> Policy:
    path = Path(path) if path else policy_path(settings)
    policy = load_validated_yaml(path, Policy)
    policy._source = str(path)
    return policy


def require(role: str, permission: str, *, actor: str, target: str = "", policy: Policy | None = None,
            settings: Settings | None = None) -> None:
    """Policy.require with the repo's policy: raises PermissionDenied (and audits it) when not allowed."""
    (policy or load_policy(settings=settings)).require(role, permission, actor=actor, target=target,
                                                       settings=settings)


def authorize(permission: str, *, target: str = "", settings: Settings | None = None,
              policy: Policy | None = None) -> Principal:
    """Who is running this command, checked for `permission`; the caller audits what it then does.

    The principal is the holder of LLMOPS_API_KEY when set (a wrong or revoked key is an
    InputError), else the local operator with the policy's `local_role` (None: a key is required).
    """
    settings = settings or Settings.load()
    policy = policy or load_policy(settings=settings)
    principal = current_principal(settings=settings, local_role=policy.local_role)
    policy.require(principal.role, permission, actor=principal.name, target=target, settings=settings)
    return principal
