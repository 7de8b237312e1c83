"""Front-door limits of the worker (`llmops serve --model`) and the gateway: a body cap and
per-client rate limits on requests and on tokens.

    llmops serve --model DIR --rate-limit "600/minute" --token-rate-limit "100000/minute"   # "off": none
    llmops gateway run --rate-limit "600/minute"           # its workers run without one: the edge limits

Tokens per minute are charged when a request arrives, as OpenAI's limits do: the prompt's
characters / 4 (rounded up) plus the completion tokens it may ask for (`max_tokens` times `n`, or
DEFAULT_COMPLETION_TOKENS when it does not say), so a flood of long generations is stopped before it
costs decode time; a request over the budget gets a 429 with code `token_rate_limit_exceeded`.

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
import json
import math
import time
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from llmops.errors import InputError

DEFAULT_RATE = "6000/minute"  # per client; high enough for a load test from one address, low enough to stop a flood
DEFAULT_MAX_CONCURRENT = 16  # requests of one client in flight at once: one client can fill a worker's batch (16 rows)
DEFAULT_TOKEN_RATE = "600000/minute"  # per client; about 3,000 requests of a 64-token answer and a 500-character prompt
DEFAULT_COMPLETION_TOKENS = 256  # charged for a request that does not set max_tokens


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


def estimated_tokens(body: bytes) -> int:
    """Tokens a request is charged at arrival: prompt characters / 4 plus the completion it may ask for.

    Any JSON body is read leniently (the app validates it later); one that is not JSON costs its
    length / 4 plus DEFAULT_COMPLETION_TOKENS, so a malformed body is never free."""
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        return math.ceil(len(body) / 4) + DEFAULT_COMPLETION_TOKENS
    if not isinstance(data, dict):
        return math.ceil(len(body) / 4) + DEFAULT_COMPLETION_TOKENS
    prompt = json.dumps(data.get("messages", data.get("prompt", "")), ensure_ascii=False)
    max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
    completion = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else DEFAULT_COMPLETION_TOKENS
    n = data.get("n") if isinstance(data.get("n"), int) and data["n"] > 0 else 1
    return math.ceil(len(prompt) / 4) + completion * n


async def read_body(receive: Any, max_bytes: int | None = None) -> tuple[bytes | None, Any]:
    """The whole request body, and a `receive` that replays it to the app; None for the body as soon
    as it grows over `max_bytes` (counted as it arrives, whatever Content-Length said)."""
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break  # disconnected: the app sees an empty body and the disconnect
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if max_bytes is not None and len(body) > max_bytes:
            return None, receive
    replayed = False

    async def replay() -> dict:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


class RateLimitMiddleware:
    """ASGI middleware: requests to `/v1/*` over `rate` per client, over `token_rate` estimated tokens
    per client, or over `max_concurrent` of its requests in flight at once (a stream counts until its
    last byte), get a 429."""

    def __init__(self, app: Any, rate: Any, prefix: str = "/v1/", max_concurrent: int | None = None,
                 token_rate: Any = None, on_reject: Callable[[str], None] | None = None) -> None:
        self.app, self.rate, self.prefix, self.max_concurrent = app, rate, prefix, max_concurrent
        self.token_rate = token_rate
        self.on_reject = on_reject  # called with the 429's code (a metric of the server that mounts this)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.active: dict[str, int] = {}

    def _over(self, rate: Any, who: str, cost: int, what: str, code: str) -> JSONResponse | None:
        if self.limiter.hit(rate, who, cost=cost):
            return None
        stats = self.limiter.get_window_stats(rate, who)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        return error_json(429, f"{what} limit {rate} exceeded for this client; retry after {retry} s",
                          "rate_limit_error", code=code, headers={"Retry-After": str(retry)})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        who = client_id(scope)
        if self.max_concurrent and self.active.get(who, 0) >= self.max_concurrent:
            response = error_json(429, f"{self.max_concurrent} requests of this client are already in flight; "
                                       "retry when one has finished", "rate_limit_error",
                                  code="concurrency_limit_exceeded", headers={"Retry-After": "1"})
            self._rejected("concurrency_limit_exceeded")
            await response(scope, receive, send)
            return
        code = "rate_limit_exceeded"
        over = None if self.rate is None else self._over(self.rate, who, 1, "rate", code)
        if over is None and self.token_rate is not None and scope.get("method") == "POST":
            body, receive = await read_body(receive)
            code = "token_rate_limit_exceeded"
            over = self._over(self.token_rate, who, estimated_tokens(body or b""), "token", code)
        if over is not None:
            self._rejected(code)
            await over(scope, receive, send)
            return
        self.active[who] = self.active.get(who, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active[who] -= 1
            if not self.active[who]:
                del self.active[who]


    def _rejected(self, code: str) -> None:
        if self.on_reject is not None:
            self.on_reject(code)


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
        body, replay = await read_body(receive, self.max_bytes)
        if body is None:
            await too_large(scope, receive, send)
            return
        await self.app(scope, replay, send)
