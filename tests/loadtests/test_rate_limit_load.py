"""The per-client rate limit under real locust traffic: a worker with API keys and a limit of 120
requests a minute per key; one key floods it (4 users, no think time) and gets 429s, while a
second key, inside its limit, is served without a single error and within the SLO's p95.

    .venv/bin/pytest tests/loadtests/test_rate_limit_load.py -q
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from loadtests.locust_runner import percentile, read_samples, run_locust
from loadtests.slo import load_slo
from serving.app import running_server

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
LIMIT = "120/minute"


def test_a_flooding_key_gets_429_while_another_key_keeps_its_slo(micro_model: Path, tmp_path: Path) -> None:
    from governance.apikeys import KeyStore

    home = tmp_path / "home"
    store = KeyStore(home / "apikeys.json")
    noisy, _ = store.create("user", "noisy")
    quiet, _ = store.create("user", "quiet")
    slo = load_slo(REPO / "loadtests" / "slo.yaml")

    def bounds(users: int, think: float) -> object:
        run = slo.run.model_copy(update={"users": users, "spawn_rate": users, "duration": 15.0, "max_tokens": 4,
                                         "think_time_s": think})
        return slo.model_copy(update={"run": run})

    runs: dict[str, object] = {}

    def drive(name: str, key: str, cfg: object) -> None:
        work = tmp_path / name
        work.mkdir()
        runs[name] = run_locust(url, cfg, work, api_key=key)  # type: ignore[arg-type]

    with running_server(micro_model, backend="torch", threads=1, auth="keys", rate_limit=LIMIT,
                        env={"LLMOPS_HOME": str(home), "LLMOPS_OPERATE": "0", "LLMOPS_GUARDS": "0"}) as url:
        # the quiet key: 1 user, ~1 request every 2 s = ~30 a minute, a quarter of its limit
        threads = [threading.Thread(target=drive, args=("noisy", noisy, bounds(4, 0.0))),
                   threading.Thread(target=drive, args=("quiet", quiet, bounds(1, 4.0)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    loud = read_samples(runs["noisy"].samples)  # type: ignore[attr-defined]
    calm = read_samples(runs["quiet"].samples)  # type: ignore[attr-defined]
    limited = [s for s in loud if s["status"] == 429]
    assert len(limited) > len(loud) // 2, f"{len(limited)} of {len(loud)} noisy requests got 429"
    assert sum(s["ok"] for s in loud) <= 125  # no more than its 120 a minute (plus streams in flight)
    assert len(calm) >= 4 and all(s["ok"] for s in calm), [s for s in calm if not s["ok"]][:3]
    p95 = percentile([s["latency_ms"] for s in calm if s["task"] == "chat"] or
                     [s["latency_ms"] for s in calm], 95)
    assert p95 is not None and p95 <= slo.slo.p95_latency_ms, f"quiet key p95 {p95:.0f} ms"
