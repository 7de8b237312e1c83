"""Harness around a real gateway, for the tests and the benches (not used by the gateway itself).

    with running_gateway(home, allow_faults=True) as (url, proc):   # `llmops gateway run` in a subprocess
        with TrafficLoop(url, users=2) as load:                     # closed-loop chat traffic
            ...
        assert load.failed == 0
    bench_gateway(gateway_url, worker_url)                          # `llmops gateway bench`

The rollback bench (`llmops gateway bench-rollback`) is llmops.jobs.bench.bench_rollback.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from llmops.launch import free_port, running_process
from serving.gateway.faults import ALLOW_FAULTS_ENV


@contextlib.contextmanager
def running_gateway(home: Path, port: int = 0, *, allow_faults: bool = False, worker_threads: int | None = 1,
                    health_interval: float = 0.25, timeout: float = 60.0, rate_limit: str = "off",
                    auth: str = "off", env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run `llmops gateway run` for LLMOPS_HOME=home; yield (url, process) once /healthz answers.
    On exit the gateway is stopped (SIGTERM: it stops its workers too). The per-client rate limit is
    off by default here: the test and bench load generators are many users behind one address; so
    are API keys (`auth`), as for any private loopback server (serving/auth.py)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "llmops", "gateway", "run", "--port", str(port),
           "--health-interval", str(health_interval), "--rate-limit", rate_limit, "--auth", auth]
    if worker_threads:
        cmd += ["--worker-threads", str(worker_threads)]
    full_env = {**os.environ, "LLMOPS_HOME": str(home), **(env or {})}
    if allow_faults:
        full_env[ALLOW_FAULTS_ENV] = "1"
    url = f"http://127.0.0.1:{port}"
    with running_process(cmd, url + "/healthz", env=full_env, timeout=timeout, what="the gateway",
                         stop_timeout=20) as proc:
        yield url, proc


class TrafficLoop:
    """Closed-loop client threads sending non-streaming chat completions until stopped.

    Records per request (end time, colour, status); a failure is any non-200 or transport error.
    Used by the rollback bench and the reliability tests.
    """

    def __init__(self, url: str, users: int = 2, max_tokens: int = 4, stream: bool = False) -> None:
        self.url, self.users, self.max_tokens, self.stream = url, users, max_tokens, stream
        self.records: list[tuple[float, float, str, int]] = []  # (start, end, colour, status)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _run(self) -> None:
        body = {"messages": [{"role": "user", "content": "What is a lambda?"}], "max_tokens": self.max_tokens,
                "stream": self.stream}
        with httpx.Client(base_url=self.url, timeout=60.0) as client:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    r = client.post("/v1/chat/completions", json=body)
                    ok = r.status_code == 200 and (not self.stream or r.text.rstrip().endswith("[DONE]"))
                    rec = (start, time.monotonic(), r.headers.get("x-llmops-colour", ""), r.status_code)
                    if not ok:
                        with self._lock:
                            self.errors.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    rec = (start, time.monotonic(), "", 0)
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                with self._lock:
                    self.records.append(rec)

    def __enter__(self) -> TrafficLoop:
        for _ in range(self.users):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=70)

    @property
    def failed(self) -> int:
        return len(self.errors)

    def all_on(self, colour: str, since: float) -> float | None:
        """The first moment after `since` from which every request started went to `colour`."""
        with self._lock:
            later = sorted(r for r in self.records if r[0] >= since)
        last_other = max((r[0] for r in later if r[2] != colour), default=None)
        firsts = [r[0] for r in later if r[2] == colour and (last_other is None or r[0] > last_other)]
        return min(firsts) if firsts else None


def bench_gateway(gateway_url: str, worker_url: str, n: int = 300, path: str = "/v1/models",
                  token: str | None = None) -> dict[str, Any]:
    """Added latency of the gateway: the same request to the worker directly and through the gateway,
    interleaved (so both see the same machine load), one client connection each; ms. The worker is
    called with the gateway's own token (`token`, default <home>/gateway/worker.token), as the
    gateway calls it."""
    from llmops.settings import Settings
    from serving.gateway.admin import worker_token

    token = token or worker_token(Settings.load())
    auth = {"authorization": f"Bearer {token}"} if token else {}
    direct, through = [], []
    with httpx.Client(base_url=worker_url, headers=auth) as d, httpx.Client(base_url=gateway_url) as g:
        for client in (d, g):  # warm the connections
            for _ in range(20):
                client.get(path).raise_for_status()
        for _ in range(n):
            for client, out in ((d, direct), (g, through)):
                t = time.perf_counter()
                r = client.get(path)
                out.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()

    def pct(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)

    out: dict[str, Any] = {"n": n, "path": path}
    for q in (50, 99):
        out[f"direct_p{q}_ms"] = round(pct(direct, q), 3)
        out[f"gateway_p{q}_ms"] = round(pct(through, q), 3)
        out[f"added_p{q}_ms"] = round(pct(through, q) - pct(direct, q), 3)
    return out
