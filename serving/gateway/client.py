"""The gateway's admin client, for the CLI (`llmops gateway ...`, `llmops release`), the rollout
controller (llmops/jobs/release.py), the tests and the benches.

    client = GatewayClient()              # the URL of the gateway that last ran under this home
    client.load("green", "3", reason="release v1.2")
    client.weights({"blue": 90, "green": 10})

It authenticates with LLMOPS_API_KEY when set, else with the local operator's token that the
running gateway wrote (serving/gateway/admin.py).
"""

from __future__ import annotations

from typing import Any

import httpx

from governance.apikeys import configured_key
from governance.policy import PermissionDenied
from llmops.errors import InputError
from llmops.settings import Settings
from serving.gateway.admin import ADMIN_TOKEN_FILE
from serving.gateway.state import gateway_dir, load_state, state_path


def admin_headers(settings: Settings | None = None) -> dict[str, str]:
    """LLMOPS_API_KEY when set, else the local operator's token written by the running gateway."""
    key = configured_key(settings)  # set but blank: an error, never a fall back to the local token
    if key is None:
        token = gateway_dir(settings) / ADMIN_TOKEN_FILE
        key = token.read_text(encoding="utf-8").strip() if token.is_file() else ""
    return {"Authorization": f"Bearer {key}"} if key else {}


class GatewayClient:
    """Synchronous admin client. Errors: InputError for 4xx (the gateway's message), PermissionDenied
    for 403, RuntimeError for 5xx."""

    def __init__(self, url: str | None = None, settings: Settings | None = None, timeout: float = 300.0) -> None:
        self.settings = settings or Settings.load()
        if url is None:
            url = load_state(state_path(self.settings)).gateway.get("url")
            if not url:
                raise InputError("no gateway has run under this home; start one with `llmops gateway run` "
                                 "or pass --gateway URL", file=str(state_path(self.settings)))
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=admin_headers(self.settings))

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            r = self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise InputError(f"gateway {self.url} unreachable: {exc}") from None
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:500]
            if r.status_code < 500:
                if r.status_code == 403:
                    raise PermissionDenied(f"gateway {path}: {message}", role="?", permission=path, actor="?")
                raise InputError(f"gateway {path} ({r.status_code}): {message}")
            raise RuntimeError(f"gateway {path} ({r.status_code}): {message}")
        return r.json() if "json" in r.headers.get("content-type", "") else r.text

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/admin/status")

    def metrics_text(self) -> str:
        return self._call("GET", "/metrics")

    def load(self, colour: str, version: str, *, reason: str = "", fault: str | None = None,
             tag: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/admin/load", {"colour": colour, "version": version, "reason": reason,
                                                  "fault": fault, "tag": tag})

    def weights(self, weights: dict[str, int], reason: str = "") -> dict[str, Any]:
        return self._call("POST", "/admin/weights", {"weights": weights, "reason": reason})

    def promote(self, colour: str, scale_down_delay_seconds: float, reason: str = "") -> dict[str, Any]:
        return self._call("POST", "/admin/promote", {"colour": colour, "reason": reason,
                                                     "scale_down_delay_seconds": scale_down_delay_seconds})

    def rollback(self, colour: str, reason: str = "") -> dict[str, Any]:
        return self._call("POST", "/admin/rollback", {"colour": colour, "reason": reason})

    def stop(self, colour: str, reason: str = "") -> dict[str, Any]:
        return self._call("POST", "/admin/stop", {"colour": colour, "reason": reason})
