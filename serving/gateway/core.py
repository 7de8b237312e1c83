"""The Gateway: routing table, workers, health and the admin operations. The FastAPI app
(serving/gateway/app.py) is a thin layer over it; the request path is serving/gateway/proxy.py.

Start. The saved state (serving/gateway/state.py) is read back and each colour's worker adopted or
started again; with no state and a `production` alias in the registry, the first start loads
production into blue at 100 %.

Health. Every `health_interval` seconds each worker's process and /readyz are checked; a colour
that is down gets no new requests (its weight goes to the other colour until it is back). A dead
worker is not restarted automatically: `llmops release`/`rollback` or an admin load does that.
An idle colour whose scale-down delay has passed is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import time
from typing import Any, Literal

import aiohttp
import httpx

from llmops.errors import InputError
from llmops.launch import LaunchError, wait_ready_async
from llmops.processes import pid_alive
from llmops.registry import open_registry
from llmops.settings import Settings
from serving.gateway.admin import AdminAuth, AdminError, LoadRequest, ensure_local_token, ensure_worker_token
from serving.gateway.faults import ALLOW_FAULTS_ENV, parse_fault
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.proxy import Routing
from serving.gateway.state import (
    COLOURS,
    ColourState,
    gateway_dir,
    load_state,
    model_id,
    now_iso,
    save_state,
    servable,
)
from serving.gateway.workers import Worker, start_worker
from serving.ratelimit import DEFAULT_RATE, DEFAULT_TOKEN_RATE


@dataclasses.dataclass
class GatewayOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    health_interval: float = 0.5
    """Seconds between two health checks of each worker."""
    worker_threads: int | None = None
    """--threads of each worker (None: the worker's default, all cores)."""
    ready_timeout: float = 180.0
    """Seconds a new worker may take to answer /readyz."""
    keep_workers: bool = False
    """Leave the workers running when the gateway stops (they are adopted on the next start)."""
    allow_faults: bool = False
    max_body_bytes: int = 1_000_000
    """Largest request body the gateway reads (and buffers, to retry on the other colour); then 413."""
    rate_limit: str | None = DEFAULT_RATE
    """Requests to /v1/* per client at the gateway (serving/ratelimit.py); its workers run without one."""
    token_rate_limit: str | None = DEFAULT_TOKEN_RATE
    """Estimated tokens per client at the gateway (serving/ratelimit.py)."""
    auth: str = "keys"
    """API keys on /v1/* at the gateway (serving/auth.py): "keys" or "off"; its workers run with "off"."""


class Gateway(Routing):
    """Routing table, workers and admin operations; the FastAPI app is a thin layer over it."""

    def __init__(self, settings: Settings, options: GatewayOptions) -> None:
        self.settings, self.opts = settings, options
        self.dir = gateway_dir(settings)
        self.path = self.dir / "state.json"
        self.state = load_state(self.path)
        self.workers: dict[str, Worker | None] = {c: None for c in COLOURS}
        self.metrics = GatewayMetrics()
        self.lock = asyncio.Lock()  # one admin change at a time
        self.client: Any = None
        """httpx, for the health checks and readiness waits; the proxy's requests go by `upstream`."""
        self.upstream: Any = None
        self.rng = random.Random()
        self.auth = AdminAuth(settings)
        self.worker_token = ""
        """Presented to the workers on every proxied request (ensure_worker_token); set at start."""
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle --
    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))  # every health call sets its own
        # No cookie jar: one worker's Set-Cookie must never ride on another client's request. An idle
        # connection is dropped after 4 s, before uvicorn's 5 s keep-alive closes it at the worker.
        # `connect` is the wait for a pooled connection plus the connect itself, as httpx's pool + connect.
        self.upstream = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=4.0),
            timeout=aiohttp.ClientTimeout(total=None, connect=12.0, sock_connect=2.0, sock_read=300.0),
            cookie_jar=aiohttp.DummyCookieJar())
        if self.auth.policy.local_role is not None:
            self.auth.local_token = ensure_local_token(self.dir)
        self.worker_token = ensure_worker_token(self.dir)
        self.state.gateway = {"url": f"http://{self.opts.host}:{self.opts.port}", "pid": os.getpid()}
        if self.state.stable is None and all(c.version is None for c in self.state.colours.values()):
            await self._bootstrap_production()
        for colour in COLOURS:
            await self._restore(colour)
        self._refresh_gauges()
        save_state(self.path, self.state)
        self._tasks.append(asyncio.create_task(self._health_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.client is not None:
            await self.client.aclose()
        if self.upstream is not None:
            await self.upstream.close()
        if not self.opts.keep_workers:
            for colour, worker in self.workers.items():
                if worker is not None:
                    await asyncio.to_thread(worker.stop)
                    self.state.colours[colour].pid = None  # type: ignore[index]
            save_state(self.path, self.state)

    async def _bootstrap_production(self) -> None:
        registry = open_registry(self.settings)
        if "production" not in registry.aliases():
            return
        version = registry.resolve("production")
        await self._load("blue", version, fault=None)
        self.state.colours["blue"].weight = 100
        self.state.stable = "blue"

    async def _restore(self, colour: str) -> None:
        """After a restart: adopt the worker still serving this colour, else start it again."""
        cs = self.state.colours[colour]  # type: ignore[index]
        if cs.version is None or cs.model_dir is None or cs.pid is None and cs.scale_down_at is not None:
            return
        if cs.pid and cs.port and pid_alive(cs.pid):
            try:
                r = await self.client.get(f"http://127.0.0.1:{cs.port}/readyz", timeout=2.0)
                if r.status_code == 200 and r.json().get("model") == model_id(colour, cs.version):
                    worker = Worker(colour, cs.port, cs.pid, None, self.dir / "logs" / f"{colour}.log")
                    worker.up = True
                    self.workers[colour] = worker
                    return
            except (httpx.HTTPError, ValueError):
                pass
        # Not adoptable: start it again in the background; its colour is down until it is ready.
        cs.pid = None
        self._tasks.append(asyncio.create_task(self._relaunch(colour)))

    async def _relaunch(self, colour: str) -> None:
        cs = self.state.colours[colour]  # type: ignore[index]
        try:
            worker = await self._start_worker(colour, cs.model_dir or "", cs.backend, cs.version or "", cs.fault)
        except AdminError:
            return
        async with self.lock:
            self.workers[colour] = worker
            cs.pid, cs.port = worker.pid, worker.port
            save_state(self.path, self.state)

    async def _start_worker(self, colour: str, model_dir: str, backend: str, version: str,
                            fault: str | None, port: int | None = None) -> Worker:
        """Start a worker and wait for its /readyz. AdminError 400 when it refused its input (exit 2),
        500 when it died otherwise, 504 when it was not ready in time (it is stopped)."""
        worker = start_worker(colour, version, model_dir, backend, log_dir=self.dir / "logs",
                              threads=self.opts.worker_threads, fault=fault, port=port, token=self.worker_token)
        try:
            await wait_ready_async(worker.url + "/readyz", self.client, proc=worker.proc, log=worker.log,
                                   timeout=self.opts.ready_timeout, what=f"the {colour} worker")
        except LaunchError as exc:
            if exc.returncode is None:
                await asyncio.to_thread(worker.stop)
                raise AdminError(504, str(exc)) from None
            raise AdminError(400 if exc.returncode == 2 else 500, str(exc)) from None
        worker.up = True
        return worker

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.health_interval)
            await self.check_health()

    async def check_health(self) -> None:
        for colour, worker in list(self.workers.items()):
            if worker is None:
                continue
            up = False
            if worker.alive():
                with contextlib.suppress(Exception):
                    up = (await self.client.get(worker.url + "/readyz", timeout=1.0)).status_code == 200
            worker.up = up
            cs = self.state.colours[colour]  # type: ignore[index]
            if cs.scale_down_at is not None and cs.weight == 0 and time.time() >= cs.scale_down_at:
                async with self.lock:  # scale-down delay over: stop the old colour
                    if cs.weight == 0 and self.workers[colour] is worker:
                        await asyncio.to_thread(worker.stop)
                        self.workers[colour] = None
                        cs.pid = None
                        save_state(self.path, self.state)
        self._refresh_gauges()

    def _refresh_gauges(self) -> None:
        for colour in COLOURS:
            worker = self.workers[colour]
            self.metrics.weight.labels(colour).set(self.state.colours[colour].weight)  # type: ignore[index]
            self.metrics.up.labels(colour).set(1 if worker is not None and worker.up else 0)

    # -- admin --
    def status(self) -> dict[str, Any]:
        data = self.state.model_dump(by_alias=True)
        for colour in COLOURS:
            worker = self.workers[colour]
            data["colours"][colour].update(up=bool(worker and worker.up), running=worker is not None,
                                           url=worker.url if worker else None)
        return data

    async def load(self, req: LoadRequest, principal: Any) -> dict[str, Any]:
        if req.fault and not self.opts.allow_faults:
            raise AdminError(400, f"fault injection is off; start the gateway with {ALLOW_FAULTS_ENV}=1")
        if req.fault:
            try:
                parse_fault(req.fault)
            except InputError as exc:
                raise AdminError(400, str(exc)) from None
        async with self.lock:
            cs = self.state.colours[req.colour]
            if cs.weight > 0 or self.state.stable == req.colour:
                raise AdminError(409, f"{req.colour} serves traffic (weight {cs.weight} %, stable: "
                                      f"{self.state.stable}); load into the idle colour")
            try:
                mv = await asyncio.to_thread(open_registry(self.settings).get, req.version)
                model_dir, backend = servable(mv.files)
            except InputError as exc:
                raise AdminError(400, str(exc)) from None
            await self._load(req.colour, mv.version, fault=req.fault, model_dir=str(model_dir), backend=backend)
            self.state.preview = req.colour
            save_state(self.path, self.state)
            self._refresh_gauges()
        self.auth.audit("deploy.load", principal, req.colour, {"version": mv.version, "tag": req.tag,
                                                               "model_dir": str(model_dir), "fault": req.fault},
                        req.reason)
        return self.status()

    async def _load(self, colour: str, version: str, *, fault: str | None, model_dir: str | None = None,
                    backend: str | None = None) -> None:
        if model_dir is None:
            mv = await asyncio.to_thread(open_registry(self.settings).get, version)
            path, backend = servable(mv.files)
            model_dir = str(path)
        old = self.workers[colour]
        if old is not None:
            await asyncio.to_thread(old.stop)
            self.workers[colour] = None
        worker = await self._start_worker(colour, model_dir, backend or "onnx", version, fault)
        self.workers[colour] = worker
        self.state.colours[colour] = ColourState(  # type: ignore[index]
            version=version, model_dir=model_dir, backend=backend or "onnx", port=worker.port, pid=worker.pid,
            weight=0, fault=fault, loaded_at=now_iso())

    async def set_weights(self, weights: dict[str, int], principal: Any, reason: str, *,
                          stable: str | None = None, preview: str | None | Literal["keep"] = "keep",
                          scale_down: tuple[str, float] | None = None, action: str = "deploy.weights") -> dict:
        full = {c: int(weights.get(c, 0)) for c in COLOURS}
        if sum(full.values()) != 100 or any(not 0 <= w <= 100 for w in full.values()):
            raise AdminError(400, f"weights must be 0..100 and sum to 100, got {full}")
        async with self.lock:
            for colour, weight in full.items():
                if weight > 0 and self.workers[colour] is None:
                    raise AdminError(409, f"{colour} has no running worker; load a version first")
            before = {c: self.state.colours[c].weight for c in COLOURS}  # type: ignore[index]
            for colour, weight in full.items():
                cs = self.state.colours[colour]  # type: ignore[index]
                cs.weight = weight
                if weight > 0:
                    cs.scale_down_at = None
            if stable is not None:
                self.state.stable = stable  # type: ignore[assignment]
            if preview != "keep":
                self.state.preview = preview  # type: ignore[assignment]
            if scale_down is not None:
                self.state.colours[scale_down[0]].scale_down_at = time.time() + scale_down[1]  # type: ignore[index]
            save_state(self.path, self.state)
            self._refresh_gauges()
        self.auth.audit(action, principal, ",".join(f"{c}={w}" for c, w in full.items()),
                        {"before": before, "after": full, "stable": self.state.stable,
                         "preview": self.state.preview,
                         "versions": {c: self.state.colours[c].version for c in COLOURS}},  # type: ignore[index]
                        reason)
        return self.status()

    async def stop_colour(self, colour: str, principal: Any, reason: str) -> dict[str, Any]:
        async with self.lock:
            cs = self.state.colours[colour]  # type: ignore[index]
            if cs.weight > 0 or self.state.stable == colour:
                raise AdminError(409, f"{colour} serves traffic; shift it away first")
            worker = self.workers[colour]
            if worker is not None:
                await asyncio.to_thread(worker.stop)
                self.workers[colour] = None
            cs.pid, cs.scale_down_at = None, None
            if self.state.preview == colour:
                self.state.preview = None
            save_state(self.path, self.state)
            self._refresh_gauges()
        self.auth.audit("deploy.load", principal, colour, {"stopped": True, "version": cs.version}, reason)
        return self.status()
