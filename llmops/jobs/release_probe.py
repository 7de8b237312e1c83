"""The release controller's own traffic to the preview during a bake (serving/rollout.yaml
`analysis.probe`), so that a release in a quiet hour is still measured, never promoted on no evidence.

A Prober thread sends chat requests straight to the preview worker, one at a time at
`requests_per_second`: the served prompt and the output guard answer them as they answer users.
It keeps cumulative counts in the shape of the gateway's per-colour sample (serving.rollout
.ColourSample); the controller adds them to the gateway's sample of the preview colour before each
measurement, so `measure()` judges real and probe traffic together. A probe is well formed by
construction, so any answer but 200 (4xx included) counts as an error, by kind in `errors_by_kind`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from typing import Any

import httpx

from serving.gateway.metrics import LATENCY_BUCKETS
from serving.guards import GUARD_HEADER
from serving.rollout import ColourSample, Probe


def add_samples(a: ColourSample, b: ColourSample) -> ColourSample:
    """Field-wise sum of two cumulative samples (latency buckets by bound)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(ColourSample):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict):
            out[f.name] = {k: x.get(k, 0.0) + y.get(k, 0.0) for k in {*x, *y}}
        else:
            out[f.name] = x + y
    return ColourSample(**out)


class Prober:
    """Chat requests to one worker on a thread; `sample()` is what they measured so far."""

    def __init__(self, url: str, bearer: str | None, probe: Probe, *, timeout: float = 30.0) -> None:
        self.url, self.probe = url.rstrip("/"), probe
        self.client = httpx.Client(timeout=timeout, headers={"authorization": f"Bearer {bearer}"} if bearer else {})
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.requests = self.errors = self.responses = self.flags = self.tokens = 0
        self.latencies: list[float] = []
        self.errors_by_kind: Counter[str] = Counter()

    def __enter__(self) -> Prober:
        if self.probe.requests_per_second > 0:
            self.thread = threading.Thread(target=self._run, name="release-probe", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout=self.client.timeout.read or 30.0)
        self.client.close()

    def _run(self) -> None:
        period, i = 1.0 / self.probe.requests_per_second, 0
        while not self.stopped.is_set():
            started = time.monotonic()
            self.send(self.probe.questions[i % len(self.probe.questions)])
            i += 1
            self.stopped.wait(max(0.0, period - (time.monotonic() - started)))

    def send(self, question: str) -> None:
        body = {"model": "default", "messages": [{"role": "user", "content": question}],
                "max_tokens": self.probe.max_tokens}
        started = time.perf_counter()
        kind, flagged, tokens = None, False, 0
        try:
            resp = self.client.post(self.url + "/v1/chat/completions", json=body)
            if resp.status_code != 200:
                kind = f"http_{resp.status_code}"
            else:
                flagged = bool(resp.headers.get(GUARD_HEADER))
                usage = resp.json().get("usage") or {}
                tokens = int(usage.get("completion_tokens") or 0)
        except (httpx.HTTPError, ValueError) as exc:
            kind = "connect" if isinstance(exc, httpx.ConnectError) else type(exc).__name__
        elapsed = time.perf_counter() - started
        with self.lock:
            self.requests += 1
            self.latencies.append(elapsed)
            if kind is not None:
                self.errors += 1
                self.errors_by_kind[kind] += 1
            else:
                self.responses += 1
                self.flags += int(flagged)
                self.tokens += tokens

    def sample(self) -> ColourSample:
        """Cumulative counts so far, in the gateway's sample shape."""
        with self.lock:
            buckets = {le: float(sum(1 for x in self.latencies if x <= le)) for le in LATENCY_BUCKETS}
            buckets[float("inf")] = float(len(self.latencies))
            return ColourSample(requests=float(self.requests), errors=float(self.errors),
                                responses=float(self.responses), guard_flags=float(self.flags),
                                tokens=float(self.tokens), buckets=buckets)

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": self.requests, "errors": self.errors, "errors_by_kind": dict(self.errors_by_kind),
                    "guard_flags": self.flags}
