"""Reliability of the blue/green release path: real gateway, real workers, real traffic on loopback.

    .venv/bin/pytest tests/serving/test_reliability.py -q -m slow

The tests share one gateway (module fixture) and run in file order: good release under locust,
manual rollback under load, a faulty release rolled back, a preview killed mid-bake, a gateway
restart. Each asserts 0 failed client requests; timings go to `llmops gateway bench-rollback`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serving.gateway.testing import TrafficLoop
from tests.serving.bluegreen import audit_actions, bluegreen, trained_from  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _locust(url: str, work: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOADTEST_", "LOCUST_"))}
    env.update(LOADTEST_MAX_TOKENS="4", LOADTEST_THINK_TIME_S="0.05", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"), "--headless",
           "--host", url, "-u", "2", "-r", "2", "--run-time", "120s", "--csv", str(work / "locust"),
           "--only-summary", "--exit-code-on-error", "0"]
    return subprocess.Popen(cmd, cwd=work, env=env, stdout=open(work / "locust.log", "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT)


def test_good_release_under_locust_has_no_failed_request(bluegreen, tmp_path):  # noqa: F811
    from llmops.jobs.release import release
    from llmops.registry import Registry
    from loadtests.locust_runner import parse_stats_csv
    from serving.rollout import load_config

    proc = _locust(bluegreen.url, tmp_path)
    try:
        time.sleep(2)  # users spawned and sending
        result = release("v1.0.0", settings=bluegreen.settings, config=load_config(bluegreen.config),
                         gateway_url=bluegreen.url, commit=trained_from(2))
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)  # locust writes its CSVs on SIGTERM
        proc.wait(timeout=30)
    rows = {r.name: r for r in parse_stats_csv(tmp_path / "locust_stats.csv")}
    total = rows["Aggregated"]
    assert total.requests > 20, (tmp_path / "locust.log").read_text()[-2000:]
    assert total.failures == 0, (tmp_path / "locust_failures.csv").read_text()
    # v1.0.0 is a tag of the commit version 2 was trained from: it released version 2, recorded the tag.
    assert (result.version, result.colour) == ("2", "green")
    status = bluegreen.status()
    assert status["stable"] == "green" and status["colours"]["green"]["weight"] == 100
    assert status["colours"]["blue"]["up"], "the old colour stays warm for the scale-down delay"
    assert Registry(bluegreen.home / "registry").aliases()["production"] == "2"
    promote = [e for e in audit_actions(bluegreen.home) if e["action"] == "release.promote"][-1]
    assert promote["details"]["tag"] == "v1.0.0" and promote["details"]["version"] == "2"


def test_manual_rollback_under_load_is_lossless(bluegreen):  # noqa: F811
    from llmops.jobs.release import rollback
    from llmops.registry import Registry

    with TrafficLoop(bluegreen.url, users=2) as load:
        time.sleep(1)
        called = time.monotonic()
        result = rollback(reason="on-call test", settings=bluegreen.settings, gateway_url=bluegreen.url)
        time.sleep(1.5)
    assert load.failed == 0, load.errors[:3]
    assert result["colour"] == "blue" and not result["loaded"]
    assert load.all_on("blue", called) is not None, "traffic never came back fully to blue"
    assert Registry(bluegreen.home / "registry").aliases()["production"] == "1"
    entry = [e for e in audit_actions(bluegreen.home) if e["action"] == "rollback"][-1]
    assert entry["reason"] == "on-call test" and entry["details"]["to_colour"] == "blue"


def _preview_requests_before_bake() -> int:
    """/v1 requests the pre-promotion analysis sends to the preview: /v1/models once per eval run
    (golden, safety; completions and chat routes) plus one request per selected case: every case
    on the completions route, the served prompt's (answer) on the chat route."""
    from evals.rule_evals import CHAT_VARS, load_cases, select_cases
    from tests.serving.bluegreen import FAST_ROLLOUT

    cases = load_cases(REPO / "evals" / "cases", REPO / "prompts")
    pre = FAST_ROLLOUT["pre_promotion"]
    total = 4
    for tags in (pre["golden_tags"], pre["safety_tags"]):
        selected = select_cases(cases, tags)
        total += len(selected) + sum(1 for c in selected if c.prompt == "answer" and "question" in c.vars
                                     and set(c.vars) <= CHAT_VARS)
    return total


def test_release_whose_version_errors_is_rolled_back_without_client_failures(bluegreen):  # noqa: F811
    from llmops.jobs.release import ReleaseAborted, release
    from serving.rollout import load_config

    fault = f"error:0.5,after:{_preview_requests_before_bake()}"  # healthy for the probes, then fails
    with TrafficLoop(bluegreen.url, users=2) as load:
        with pytest.raises(ReleaseAborted, match="error rate"):
            release("3", settings=bluegreen.settings, config=load_config(bluegreen.config),
                    gateway_url=bluegreen.url, fault=fault)
        aborted = time.monotonic()
        time.sleep(1)
    assert load.failed == 0, load.errors[:3]
    assert load.all_on("blue", aborted) is not None
    status = bluegreen.status()
    assert status["stable"] == "blue" and status["colours"]["blue"]["weight"] == 100
    abort = [e for e in audit_actions(bluegreen.home) if e["action"] == "release.abort"][-1]
    assert "error rate" in abort["reason"] and abort["details"]["version"] == "3"


def test_release_whose_version_is_slow_is_rolled_back_without_client_failures(bluegreen, tmp_path):  # noqa: F811
    import yaml

    from llmops.jobs.release import ReleaseAborted, release
    from serving.rollout import load_config
    from tests.serving.bluegreen import FAST_ROLLOUT

    # The same fast rollout with a p95 ceiling the slowed preview cannot meet (it answers in >= 600 ms).
    fast = yaml.safe_load(bluegreen.config.read_text())
    config = tmp_path / "rollout.yaml"
    config.write_text(yaml.safe_dump({**fast, "thresholds": {**FAST_ROLLOUT["thresholds"], "max_p95_latency_ms": 300}}))
    fault = f"latency:600ms,after:{_preview_requests_before_bake()}"
    with TrafficLoop(bluegreen.url, users=2) as load:
        with pytest.raises(ReleaseAborted, match="p95"):
            release("3", settings=bluegreen.settings, config=load_config(config), gateway_url=bluegreen.url,
                    fault=fault)
        aborted = time.monotonic()
        time.sleep(1)
    assert load.failed == 0, load.errors[:3]
    assert load.all_on("blue", aborted) is not None
    abort = [e for e in audit_actions(bluegreen.home) if e["action"] == "release.abort"][-1]
    assert "p95" in abort["reason"]


def test_killing_the_preview_mid_bake_aborts_without_client_failures(bluegreen):  # noqa: F811
    from llmops.jobs.release import ReleaseAborted
    from serving.rollout import load_config

    cfg = load_config(bluegreen.config).model_copy(update={"bake_seconds": 6.0})
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        from llmops.jobs.release import release

        try:
            release("3", settings=bluegreen.settings, config=cfg, gateway_url=bluegreen.url)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    with TrafficLoop(bluegreen.url, users=2) as load:
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = bluegreen.status()
            if status["colours"]["green"]["weight"] > 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the release never shifted traffic: {outcome}")
        time.sleep(0.7)  # mid-bake, with requests in flight on green
        os.kill(status["colours"]["green"]["pid"], signal.SIGKILL)
        thread.join(timeout=60)
        time.sleep(0.5)
    assert isinstance(outcome.get("error"), ReleaseAborted), outcome
    assert "down" in str(outcome["error"]) or "error rate" in str(outcome["error"])
    assert load.failed == 0, load.errors[:3]
    assert bluegreen.status()["colours"]["blue"]["weight"] == 100


def test_restarted_gateway_keeps_its_routing(bluegreen):  # noqa: F811
    import httpx

    from serving.gateway.testing import running_gateway

    client = bluegreen.client()
    client.load("green", "2", reason="restart test")
    client.weights({"blue": 70, "green": 30}, reason="restart test")
    before = client.status()
    client.close()
    port = int(bluegreen.url.rsplit(":", 1)[1])
    bluegreen.proc.send_signal(signal.SIGKILL)  # a crash: the workers live on in their own sessions
    bluegreen.proc.wait()
    with running_gateway(bluegreen.home, port=port, allow_faults=True) as (url, proc):
        after = bluegreen.status()
        for colour in ("blue", "green"):
            for key in ("version", "weight", "pid", "port"):
                assert after["colours"][colour][key] == before["colours"][colour][key], (colour, key)
        assert after["stable"] == before["stable"] == "blue"
        seen = {httpx.post(url + "/v1/chat/completions", timeout=30,
                           json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
                           ).headers["x-llmops-colour"] for _ in range(30)}
        assert seen == {"blue", "green"}
        bluegreen.proc = proc
