"""The gateway's admin API: request bodies, errors, who may call what, and the audit trail.

Every call carries `Authorization: Bearer KEY`; the key's role must hold the permission in
governance/policy.yaml (401 without a valid key, 403 without the permission, both checked before
the body is read); every action that changes something is written to the audit log. The gateway
serves these routes' OpenAPI at /openapi.json (bodies, every status, the bearer scheme); errors come
in OpenAI's shape, {"error": {"message", "type", "param", "code"}}, a bad body as a 400 naming the
field in `param`:

    GET  /admin/status    metrics.read     state, liveness and counters per colour
    GET  /metrics         metrics.read
    POST /admin/load      deploy.load      {"colour", "version", "reason"}: start that version as the preview
    POST /admin/weights   deploy.weights   {"weights": {"blue": 90, "green": 10}, "reason"}
    POST /admin/promote   deploy.weights   {"colour", "scale_down_delay_seconds", "reason"}
    POST /admin/rollback  rollback         {"colour", "reason"}: 100 % to colour, which becomes stable
    POST /admin/stop      deploy.load      {"colour", "reason"}: stop an idle colour's worker

The local operator (the CLI without LLMOPS_API_KEY) authenticates with a token the gateway writes
to `<home>/gateway/admin.token` (mode 0600) and gets the policy's `local_role`; with
`local_role: null` no token is written and only API keys work. The routes are in
serving/gateway/app.py, the operations in serving/gateway/core.py, the client in client.py.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from governance.apikeys import AuthenticationError, KeyStore, Principal, key_file
from governance.audit import audit_event, local_actor
from governance.policy import PermissionDenied, load_policy
from llmops.files import atomic_write_text
from llmops.settings import Settings
from serving.gateway.state import Colour

ADMIN_TOKEN_FILE = "admin.token"
WORKER_TOKEN_FILE = "worker.token"


class AdminError(Exception):
    """An admin call that fails: answered with `status` and an OpenAI-shaped error body,
    {"error": {"message", "type", "param", "code"}}, like every other error of the serving API."""

    CODES = {400: "invalid_value", 401: "invalid_api_key", 403: "permission_denied", 409: "conflict",
             500: "worker_failed", 504: "worker_timeout"}

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.code = code or self.CODES.get(status)

    @property
    def type(self) -> str:
        return {401: "authentication_error", 403: "permission_error"}.get(
            self.status, "server_error" if self.status >= 500 else "invalid_request_error")


# What the admin routes answer besides 200, for their OpenAPI (serving/gateway/app.py).
ADMIN_ERRORS: dict[int, str] = {
    400: "An invalid body (the field is named in `param`), a version the registry does not hold, "
         "weights that do not sum to 100, or a fault while fault injection is off",
    401: "No valid API key or local token (Authorization: Bearer ...)",
    403: "The key's role lacks the permission (governance/policy.yaml)",
    409: "The change conflicts with what is served: a colour that serves traffic, or one with no worker",
    413: "Body over the size cap",
    500: "The new worker exited while starting",
    504: "The new worker was not ready in time (it was stopped)",
}

REASON = Field("", max_length=2_000, description="Why: written to the audit log")
COLOUR = Field(description="The colour acted on")


class LoadRequest(BaseModel):
    """POST /admin/load: start `version` as the preview on the idle `colour` (weight 0)."""

    # strict: no coercion (false is not 0, "10" is not 10); the example is what a release sends
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"colour": "green", "version": "2", "reason": "canary of v2", "tag": "v1.2.0"}]})
    colour: Colour = COLOUR
    version: str = Field(min_length=1, max_length=200, description="A registered version number or an alias")
    reason: str = REASON
    fault: str | None = Field(None, max_length=200, description="A fault to inject (serving/gateway/faults.py); "
                                                                   "refused unless the gateway allows faults")
    tag: str | None = Field(None, max_length=200, description="The release tag, for the audit log")


class WeightsRequest(BaseModel):
    """POST /admin/weights: the share of traffic per colour, in percent; the shares sum to 100."""

    # strict: no coercion (false is not 0, "10" is not 10); the example is what a release sends
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"weights": {"blue": 90, "green": 10}, "reason": "canary at 10 %"}]})
    weights: dict[Colour, Annotated[int, Field(ge=0, le=100)]] = Field(min_length=1)
    reason: str = REASON


class PromoteRequest(BaseModel):
    """POST /admin/promote: 100 % to `colour`, which becomes stable; the other stops after the delay."""

    # strict: no coercion (false is not 0, "10" is not 10); the example is what a release sends
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"colour": "green", "scale_down_delay_seconds": 600, "reason": "analysis passed"}]})
    colour: Colour = COLOUR
    scale_down_delay_seconds: float = Field(600, ge=0, le=7 * 86_400)
    reason: str = REASON


class ColourRequest(BaseModel):
    """POST /admin/rollback (100 % to `colour`, which becomes stable) and /admin/stop (stop an idle
    colour's worker)."""

    # strict: no coercion (false is not 0, "10" is not 10); the example is what a release sends
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"colour": "blue", "reason": "error rate over the SLO"}]})
    colour: Colour = COLOUR
    reason: str = REASON


def ensure_token(directory: Path, name: str, prefix: str = "") -> str:
    """The secret in `directory`/`name`, written once with mode 0600 in a folder of mode 0700, and
    kept across restarts. A file that others can read (an older gateway's) is replaced."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    token_file = directory / name
    if not token_file.is_file() or token_file.stat().st_mode & 0o077:
        atomic_write_text(token_file, prefix + secrets.token_urlsafe(32), mode=0o600)
    return token_file.read_text(encoding="utf-8").strip()


def ensure_local_token(directory: Path) -> str:
    """The local operator's token (admin.token): it grants admin, so no other local account may read it."""
    return ensure_token(directory, ADMIN_TOKEN_FILE)


def ensure_worker_token(directory: Path) -> str:
    """The token the gateway presents to its workers (worker.token), kept so that adopted workers
    still accept it. A worker accepts it in place of an API key (serving/auth.py): it proves the
    request came through the gateway, which checked the client's key at the edge."""
    return ensure_token(directory, WORKER_TOKEN_FILE, prefix="gw_")


def worker_token(settings: Settings) -> str | None:
    """The gateway's token for its workers, as the local operator reads it; None before a gateway ran."""
    path = settings.home / "gateway" / WORKER_TOKEN_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


class AdminAuth:
    """API keys, the local token and the role policy: who may call an admin route, and the audit log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = load_policy(settings=settings)
        self.keys = KeyStore(key_file(settings))
        self.local_token: str | None = None
        """Set by the gateway at start when the policy has a local_role."""

    def authenticate(self, authorization: str | None, permission: str, target: str = "") -> Principal:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AdminError(401, "an admin call needs 'Authorization: Bearer <API key>'")
        key = key.strip()
        if self.local_token is not None and hmac.compare_digest(key, self.local_token):
            principal = Principal(name=local_actor(), role=self.policy.local_role or "")
        else:
            try:
                principal = self.keys.authenticate(key)
            except AuthenticationError as exc:
                raise AdminError(401, str(exc)) from None
        try:
            self.policy.require(principal.role, permission, actor=principal.name, target=target,
                                settings=self.settings)
        except PermissionDenied as exc:
            raise AdminError(403, str(exc)) from None
        return principal

    def audit(self, action: str, principal: Any, target: str, details: dict[str, Any], reason: str) -> None:
        audit_event(action, actor=principal.name, role=principal.role, target=target, details=details,
                    reason=reason, settings=self.settings)
