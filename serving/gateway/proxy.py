"""The gateway's request path: pick a colour by weight, proxy to its worker, retry once on the
other colour, pass SSE through, count and scan what came back.

Retries. A request whose worker refuses the connection, drops it before answering, or answers
500/502/503/504 is sent once more to the other colour when that colour is up and allowed to take
traffic (it has weight, or it is not an unanalysed preview). The failed attempt still counts as
an error of its colour in the metrics (serving/gateway/metrics.py), so the rollout analysis sees
what the client did not. A stream that has started cannot be retried: its bytes have reached the
client.

Errors and guard flags. An attempt counts under its HTTP status in llmops_gateway_requests_total
(4xx answers included: the rollout analysis compares the colours' 4xx rates); a stream that
breaks, ends without `data: [DONE]` or carries an in-band error counts as an upstream error of its
colour under its status code, though its 200 headers were sent. A streamed answer's output-guard
flags arrive in the stream (the SSE comment of serving/guards.py, GUARD_COMMENT) and count like
the `x-llmops-guard-flag` header of a JSON answer.

Every answer gets the headers `x-llmops-colour` and `x-llmops-version` (and `x-llmops-retried-from`
after a retry). One aiohttp.ClientSession, owned by the Gateway (serving/gateway/core.py), carries all
upstream requests: on the bench (`llmops gateway bench`) it answered a loopback GET in under half
the time httpx's AsyncClient took, and that time is most of what the gateway adds. Its reads are
decompressed, hence Content-Encoding is dropped from what is passed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator

import aiohttp
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from serving.gateway.metrics import GatewayMetrics, completion_text, guard_kinds
from serving.gateway.state import GatewayState, other
from serving.gateway.workers import Worker
from serving.guards import GUARD_COMMENT, GUARD_HEADER

STREAM_FLAG = GUARD_COMMENT.encode()

RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
# Hop-by-hop and length headers are the proxy's own business; Authorization never goes to a worker.
DROP_REQUEST_HEADERS = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding",
                                  "authorization", "te", "upgrade", "proxy-authorization"})
DROP_RESPONSE_HEADERS = frozenset({"content-length", "connection", "keep-alive", "transfer-encoding",
                                   "content-encoding", "date", "server"})
# What an upstream request can fail with once sent: aiohttp's errors and its timeouts (read, connect).
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


def response_headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    """The worker's headers to pass back, lower-cased, a repeated one joined with ", "."""
    out: dict[str, str] = {}
    for key, value in resp.headers.items():
        key = key.lower()
        if key not in DROP_RESPONSE_HEADERS:
            out[key] = f"{out[key]}, {value}" if key in out else value
    return out


class Routing:
    """The proxy half of the Gateway (a mixin): it reads the routing table, the workers, the metrics
    and the upstream client that the Gateway owns."""

    state: GatewayState
    workers: dict[str, Worker | None]
    metrics: GatewayMetrics
    upstream: aiohttp.ClientSession
    rng: random.Random
    worker_token: str

    def _may_fall_back_to(self, colour: str) -> bool:
        worker = self.workers[colour]
        if worker is None or not worker.up:
            return False
        # An unanalysed preview takes only the traffic it was given, never a fallback.
        return self.state.colours[colour].weight > 0 or self.state.preview != colour  # type: ignore[index]

    def route(self) -> list[str]:
        """Colours to try, in order: one picked by weight (skipping a down colour), then the fallback."""
        blue = self.state.colours["blue"].weight
        first = "blue" if self.rng.random() * 100 < blue else "green"
        worker = self.workers[first]
        if self.state.colours[first].weight == 0 or worker is None or not worker.up:  # type: ignore[index]
            first = other(first)
        order = [first] if self.workers[first] is not None else []
        if self._may_fall_back_to(other(first)):
            order.append(other(first))
        return order

    async def proxy(self, request: Request) -> Response:
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.items() if k not in DROP_REQUEST_HEADERS]
        headers.append(("authorization", f"Bearer {self.worker_token}"))  # the client's key stayed here
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        order = self.route()
        last: Response | None = None
        for attempt, colour in enumerate(order):
            worker = self.workers[colour]
            if worker is None:
                continue
            can_retry = attempt + 1 < len(order)
            start = time.perf_counter()
            try:
                resp = await self.upstream.request(request.method, worker.url + target, headers=headers,
                                                   data=body or None, allow_redirects=False)
            except UPSTREAM_ERRORS as exc:
                refused = isinstance(exc, aiohttp.ClientConnectorError)
                self._failed(colour, "connect" if refused else "transport", start)
                worker.up = worker.up and not refused
                if can_retry:
                    self.metrics.retries.labels(colour, order[attempt + 1]).inc()
                continue
            version = self.state.colours[colour].version or ""  # type: ignore[index]
            out_headers = response_headers(resp)
            out_headers.update({"x-llmops-colour": colour, "x-llmops-version": version})
            if attempt:
                out_headers["x-llmops-retried-from"] = order[attempt - 1]
            if resp.status in RETRYABLE_STATUS:
                try:
                    data = await resp.read()
                except UPSTREAM_ERRORS:
                    data = b""
                resp.release()
                self._failed(colour, f"http_{resp.status}", start, status=str(resp.status))
                last = Response(data, status_code=resp.status, headers=out_headers)
                if can_retry:
                    self.metrics.retries.labels(colour, order[attempt + 1]).inc()
                    continue
                break
            flag = resp.headers.get(GUARD_HEADER)
            if resp.headers.get("content-type", "").startswith("text/event-stream"):
                return StreamingResponse(self._relay(resp, colour, start, flag), status_code=resp.status,
                                         headers=out_headers)
            try:
                data = await resp.read()
            except UPSTREAM_ERRORS:
                resp.release()
                self._failed(colour, "transport", start)
                if can_retry:
                    self.metrics.retries.labels(colour, order[attempt + 1]).inc()
                continue
            resp.release()
            self.metrics.requests.labels(colour, str(resp.status)).inc()
            self.metrics.latency.labels(colour).observe(time.perf_counter() - start)
            task = (BackgroundTask(self._scan_body, colour, data, flag)
                    if resp.status == 200 and request.url.path.endswith("completions") else None)
            return Response(data, status_code=resp.status, headers=out_headers, background=task)
        self.metrics.client_errors.inc()
        if last is not None:
            return last
        return JSONResponse(status_code=503 if not order else 502, content={"error": {
            "message": "no worker could answer" if order else "no version is loaded",
            "type": "server_error", "param": None, "code": "upstream_unavailable"}})

    def _failed(self, colour: str, kind: str, start: float, status: str = "error") -> None:
        self.metrics.requests.labels(colour, status).inc()
        self.metrics.errors.labels(colour, kind).inc()
        self.metrics.latency.labels(colour).observe(time.perf_counter() - start)

    def _scan_body(self, colour: str, data: bytes, flag: str | None) -> None:
        try:
            text, tokens = completion_text(json.loads(data))
        except (ValueError, AttributeError):
            return
        self._account(colour, text, tokens if tokens is not None else 0, flag)

    def _account(self, colour: str, text: str, tokens: int, flag: str | None) -> None:
        self.metrics.responses.labels(colour).inc()
        self.metrics.tokens.labels(colour).inc(tokens)
        kinds = guard_kinds(text) + (["worker"] if flag else [])
        for kind in kinds:
            self.metrics.guard_flags.labels(colour, kind).inc()

    async def _relay(self, resp: aiohttp.ClientResponse, colour: str, start: float, flag: str | None) -> AsyncIterator[bytes]:
        """Pass SSE bytes through as they come; read the events on the side for tokens, the guard's
        comment and errors."""
        buf, parts, tokens, chunks, done, failed = b"", [], None, 0, False, None
        try:
            async for raw in resp.content.iter_any():
                yield raw
                buf += raw
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    line = event.strip()
                    if line.startswith(STREAM_FLAG):
                        flag = flag or line[len(STREAM_FLAG):].decode("utf-8", "replace")
                        continue
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        continue
                    with contextlib.suppress(ValueError, AttributeError):
                        obj = json.loads(payload)
                        if "error" in obj:
                            failed = "stream_error"
                        text, used = completion_text(obj)
                        if text:
                            parts.append(text)
                            chunks += 1
                        if used is not None:
                            tokens = used
        except UPSTREAM_ERRORS:
            failed = "stream_broken"
        finally:
            resp.release()
            elapsed = time.perf_counter() - start
            if failed or not done:
                self._failed(colour, failed or "stream_broken", start, status=str(resp.status))
            else:
                self.metrics.requests.labels(colour, str(resp.status)).inc()
                self.metrics.latency.labels(colour).observe(elapsed)
                self._account(colour, "".join(parts), tokens if tokens is not None else chunks, flag)
