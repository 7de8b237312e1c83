"""Fault injection, for tests and game days only.

A load request may carry "fault": "error:0.5", "client_error:0.3", "latency:800ms" or "after:20"
modifiers ("error:0.5,after:20": the first 20 /v1 requests are fine, then half fail with 500;
"client_error:0.3": 30 % get a 400, a version that refuses requests the stable one serves). The gateway
accepts it only when it was started with LLMOPS_ALLOW_FAULTS=1; the worker is then started as
`python -m serving.gateway.fault_worker` (serving/gateway/fault_worker.py), which serves the same
app as `llmops serve` wrapped in FaultMiddleware, with the spec in LLMOPS_FAULT. Without a fault
the worker command is the plain `llmops serve`, and the middleware does not exist in it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
from typing import Any

from llmops.errors import InputError

ALLOW_FAULTS_ENV = "LLMOPS_ALLOW_FAULTS"
FAULT_ENV = "LLMOPS_FAULT"


@dataclasses.dataclass(frozen=True)
class FaultSpec:
    error_rate: float = 0.0
    """Share of /v1 requests answered with HTTP 500, in [0, 1]."""
    client_error_rate: float = 0.0
    """Share of /v1 requests answered with HTTP 400 (OpenAI's invalid_request_error), in [0, 1]."""
    latency_s: float = 0.0
    """Seconds added before every /v1 request is handled."""
    after: int = 0
    """The first `after` /v1 requests are left alone (a version that degrades under load)."""


def parse_fault(text: str) -> FaultSpec:
    """'error:0.5', 'client_error:0.3', 'latency:800ms' (or '0.8s'), 'after:20', comma-separated;
    InputError otherwise."""
    values: dict[str, Any] = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, _, raw = part.partition(":")
        try:
            if name in ("error", "client_error"):
                key = f"{name}_rate"
                values[key] = float(raw)
                if not 0 <= values[key] <= 1:
                    raise ValueError
            elif name == "latency":
                m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", raw.strip())
                if not m:
                    raise ValueError
                values["latency_s"] = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
            elif name == "after":
                values["after"] = int(raw)
                if values["after"] < 0:
                    raise ValueError
            else:
                raise ValueError
        except ValueError:
            raise InputError(f"bad fault {part!r}: use error:RATE, client_error:RATE (0..1), latency:MSms|Ss, after:N",
                             field="fault") from None
    if not values:
        raise InputError("empty fault spec", field="fault")
    return FaultSpec(**values)


class FaultMiddleware:
    """ASGI wrapper that makes /v1/* slow or failing per a FaultSpec; health routes stay fine, as in a
    real bad release (the process is up, its answers are wrong)."""

    def __init__(self, app: Any, spec: FaultSpec) -> None:
        self.app, self.spec, self.seen = app, spec, 0
        self.rng = random.Random(0)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        self.seen += 1
        if self.seen > self.spec.after:
            if self.spec.latency_s:
                await asyncio.sleep(self.spec.latency_s)
            for status, rate, kind in ((500, self.spec.error_rate, "server_error"),
                                       (400, self.spec.client_error_rate, "invalid_request_error")):
                if rate and self.rng.random() < rate:
                    body = json.dumps({"error": {"message": "injected fault", "type": kind,
                                                 "param": None, "code": "injected_fault"}}).encode()
                    await send({"type": "http.response.start", "status": status,
                                "headers": [(b"content-type", b"application/json")]})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)
