"""API keys on the model API: `/v1/*` needs a key whose role holds `chat`, and `/v1/completions`
one whose role holds `completions.raw` (governance/policy.yaml).

    llmops keys create --role user --name docs-bot          # prints the key once
    curl -H "Authorization: Bearer $KEY" localhost:8000/v1/models
    llmops serve --model DIR --auth off                     # a private server on loopback only

Used by the worker (`llmops serve --model`) and the gateway (`llmops gateway run`), both with
`--auth keys` by default: fail closed. A missing, malformed, unknown or revoked key gets a 401
with `WWW-Authenticate: Bearer`; a key whose role lacks the permission gets a 403 and a
`role.denied` audit entry. `/v1/completions` takes a caller-built template, system turn included,
where the input detectors cannot tell instructions from data (serving/guards.py `raw_completions`),
so it is a harness permission (evals, parity, leakage) that the `user` role does not hold. `/v1/feedback` checks its own permission (`feedback`); health, readiness, metrics and
the chat page are outside `/v1/`. The key file is re-read when it changes, so a revoke takes effect
on the next request.

Workers behind a gateway run with keys too, and also accept the gateway's own token
(LLMOPS_WORKER_TOKEN, `<home>/gateway/worker.token`, 0600), which the gateway presents on every
request it forwards after checking the client's key: so a worker takes only the gateway or a key.
`--auth off` (loopback only, announced on stderr) is for the harnesses' private servers (an eval,
the PR gate, a load test) and a laptop demo.
"""

from __future__ import annotations

import hmac
from typing import Any, Literal

from governance.apikeys import AuthenticationError, KeyStore, key_file
from governance.policy import PermissionDenied, Policy, load_policy
from llmops.errors import InputError
from llmops.settings import Settings
from serving.ratelimit import error_json

AuthMode = Literal["keys", "off"]
AUTH_MODES: tuple[str, ...] = ("keys", "off")


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_mode(mode: str, host: str | None = None) -> AuthMode:
    """`mode` as an AuthMode; InputError for an unknown one, or for "off" on an address other
    than loopback (then anyone who reaches the host could use the model API)."""
    if mode not in AUTH_MODES:
        raise InputError(f"auth must be one of {', '.join(AUTH_MODES)}, not {mode!r}", field="auth")
    if mode == "off" and host is not None and host not in LOOPBACK:
        raise InputError(f"--auth off on {host}: without keys only a loopback address ({', '.join(LOOPBACK)}) "
                         "may serve the model API", field="auth")
    return mode  # type: ignore[return-value]


def insecure_notice(host: str, port: int) -> str:
    return (f"WARNING: --auth off: /v1/* on http://{host}:{port} takes requests without an API key "
            "(loopback only; for a demo, a harness, or workers behind a gateway)")


def bearer_token(scope: dict[str, Any]) -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None (no header, another scheme)."""
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


# Paths under /v1/ that need more than `chat`.
PATH_PERMISSIONS = {"/v1/completions": "completions.raw"}


class ApiKeyMiddleware:
    """ASGI middleware: requests under `prefix` (except `skip`) need a key holding `permission`
    (or the path's own in `PATH_PERMISSIONS`)."""

    def __init__(self, app: Any, keys: KeyStore, policy: Policy, permission: str = "chat",
                 prefix: str = "/v1/", skip: tuple[str, ...] = ("/v1/feedback",),
                 settings: Settings | None = None, gateway_token: str | None = None) -> None:
        self.app, self.keys, self.policy, self.permission = app, keys, policy, permission
        self.prefix, self.skip, self.settings = prefix, skip, settings
        self.gateway_token = gateway_token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefix) or path in self.skip:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        challenge = {"WWW-Authenticate": "Bearer"}
        if token is None:
            response = error_json(401, "missing API key: send 'Authorization: Bearer <key>' (create one with "
                                       "`llmops keys create --role user --name NAME`)",
                                  "authentication_error", code="missing_api_key", headers=challenge)
            await response(scope, receive, send)
            return
        if self.gateway_token and hmac.compare_digest(token.encode(), self.gateway_token.encode()):
            await self.app(scope, receive, send)  # through the gateway, which checked the key at the edge
            return
        try:
            principal = self.keys.authenticate(token)
        except AuthenticationError:
            response = error_json(401, "invalid or revoked API key", "authentication_error",
                                  code="invalid_api_key", headers=challenge)
            await response(scope, receive, send)
            return
        try:
            self.policy.require(principal.role, PATH_PERMISSIONS.get(path.rstrip("/"), self.permission),
                                actor=principal.name, target=path, settings=self.settings)
        except PermissionDenied as exc:
            response = error_json(403, str(exc), "permission_error", code="permission_denied")
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def api_key_middleware(app: Any, settings: Settings | None = None) -> ApiKeyMiddleware:
    """The middleware over `app` with the key file, policy and gateway token of `settings`."""
    settings = settings or Settings.load()
    return ApiKeyMiddleware(app, KeyStore(key_file(settings)), load_policy(settings=settings), settings=settings,
                            gateway_token=settings.secret("worker_token"))
