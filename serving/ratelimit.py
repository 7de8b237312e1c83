"""Front-door limits of the worker (`llmops serve --model`) and the gateway: a body cap and
per-client rate limits.

    llmops serve --model DIR --rate-limit "600/minute"     # "off" turns it off
    llmops gateway run --rate-limit "600/minute"           # its workers run without one: the edge limits

A client is its API key (the sha256 of the bearer token, never the token) or, without one, its
address. `limits` (moving window, in memory) counts the requests to `/v1/*`; one over the limit
gets an OpenAI-shaped 429 with `Retry-After`. Health, readiness and metrics routes are not limited.
BodyCapMiddleware reads the body itself, counting the bytes as they arrive, so a chunked upload (no
Content-Length) or a lying header stops at the first byte over the cap with a 413, before any inner
layer buffers it; the app then reads the same bytes from a replay.

In memory means per process: several gateway replicas would each allow the rate (a shared store,
e.g. Redis through `limits`' storage URIs, is the step for that).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from fastapi.responses import JSONResponse
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from llmops.errors import InputError

DEFAULT_RATE = "6000/minute"  # per client; high enough for a load test from one address, low enough to stop a flood
DEFAULT_MAX_CONCURRENT = 16  # requests of one client in flight at once: one client can fill a worker's batch (16 rows)


def error_json(status: int, message: str, type_: str, param: str | None = None, code: str | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI-shaped error body: {"error": {"message", "type", "param", "code"}}."""
    return JSONResponse(status_code=status, headers=headers,
                        content={"error": {"message": message, "type": type_, "param": param, "code": code}})


def parse_rate(text: str | None) -> Any:
    """A `limits` rate item ("600/minute", "10/second"), or None for "off"/empty."""
    if text is None or text.strip().lower() in ("", "off", "none", "0"):
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise InputError(f"not a rate limit: {text!r} (e.g. '600/minute', or 'off')", field="rate_limit") from exc


def client_id(scope: dict[str, Any]) -> str:
    for name, value in scope.get("headers") or []:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return "key:" + hashlib.sha256(value[7:].strip()).hexdigest()[:16]
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


class RateLimitMiddleware:
    """ASGI middleware: requests to `/v1/*` over `rate` per client, or over `max_concurrent` of its
    requests in flight at once (a stream counts until its last byte), get a 429."""

    def __init__(self, app: Any, rate: Any, prefix: str = "/v1/", max_concurrent: int | None = None) -> None:
        self.app, self.rate, self.prefix, self.max_concurrent = app, rate, prefix, max_concurrent
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.active: dict[str, int] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        who = client_id(scope)
        if self.max_concurrent and self.active.get(who, 0) >= self.max_concurrent:
            response = error_json(429, f"{self.max_concurrent} requests of this client are already in flight; "
                                       "retry when one has finished", "rate_limit_error",
                                  code="concurrency_limit_exceeded", headers={"Retry-After": "1"})
            await response(scope, receive, send)
            return
        if self.rate is not None and not self.limiter.hit(self.rate, who):
            stats = self.limiter.get_window_stats(self.rate, who)
            retry = max(1, math.ceil(stats.reset_time - time.time()))
            response = error_json(429, f"rate limit {self.rate} exceeded for this client; retry after {retry} s",
                                  "rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": str(retry)})
            await response(scope, receive, send)
            return
        self.active[who] = self.active.get(who, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active[who] -= 1
            if not self.active[who]:
                del self.active[who]


class BodyCapMiddleware:
    """ASGI middleware: a request body over `max_bytes` (declared or counted) gets a 413."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = error_json(413, f"request body is over the limit of {self.max_bytes} bytes",
                               "invalid_request_error", code="request_too_large")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break  # disconnected: the app sees an empty body and the disconnect
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await too_large(scope, receive, send)
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
