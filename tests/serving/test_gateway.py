"""The gateway: admin auth and audit, weight validation, routing, SSE passthrough, per-colour metrics,
retry on a dead worker, guard flags and the fault switch.

    .venv/bin/pytest tests/serving/test_gateway.py -q
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from llmops.errors import InputError
from serving.gateway.faults import FaultSpec, parse_fault
from serving.gateway.workers import worker_command
from serving.rollout import parse_metrics
from tests.serving.bluegreen import audit_actions, bluegreen  # noqa: F401  (fixture)

CHAT = {"messages": [{"role": "user", "content": "What is a lambda?"}], "max_tokens": 4}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_admin_needs_a_key_and_the_role(bluegreen):  # noqa: F811
    url = bluegreen.url
    assert httpx.get(url + "/admin/status").status_code == 401
    assert httpx.get(url + "/admin/status", headers=_auth("llm_0123456789ab_" + "x" * 43)).status_code == 401
    for path, body in (("/admin/weights", {"weights": {"blue": 100}}), ("/admin/load", {"colour": "green",
                                                                                      "version": "2"})):
        r = httpx.post(url + path, json=body, headers=_auth(bluegreen.keys["user"]))
        assert r.status_code == 403, r.text
        assert "may not" in r.json()["error"]["message"]
    assert httpx.get(url + "/metrics", headers=_auth(bluegreen.keys["user"])).status_code == 403
    denied = [e for e in audit_actions(bluegreen.home) if e["action"] == "role.denied"]
    assert {e["details"]["permission"] for e in denied} >= {"deploy.weights", "deploy.load", "metrics.read"}
    # The release-manager may; its change is audited under its key's name, and the key is not logged.
    r = httpx.post(url + "/admin/weights", json={"weights": {"blue": 100}, "reason": "no-op"},
                   headers=_auth(bluegreen.keys["release-manager"]))
    assert r.status_code == 200, r.text
    entry = audit_actions(bluegreen.home)[-1]
    assert (entry["action"], entry["actor"], entry["reason"]) == ("deploy.weights", "test-release-manager", "no-op")
    log = (bluegreen.home / "audit" / "audit.jsonl").read_text()
    assert all(key.split("_", 2)[2] not in log for key in bluegreen.keys.values())


def test_weights_are_validated(bluegreen):  # noqa: F811
    admin = _auth(bluegreen.keys["admin"])
    r = httpx.post(bluegreen.url + "/admin/weights", json={"weights": {"blue": 60, "green": 30}}, headers=admin)
    assert r.status_code == 400 and "sum to 100" in r.text
    if not bluegreen.status()["colours"]["green"]["running"]:
        r = httpx.post(bluegreen.url + "/admin/weights", json={"weights": {"blue": 50, "green": 50}}, headers=admin)
        assert r.status_code == 409 and "no running worker" in r.text
    r = httpx.post(bluegreen.url + "/admin/weights", json={"weights": {"red": 100}}, headers=admin)
    assert r.status_code == 400


def test_routes_streams_and_counts_per_colour(bluegreen):  # noqa: F811
    before = parse_metrics(bluegreen.client().metrics_text(), "blue")
    r = httpx.post(bluegreen.url + "/v1/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 200 and r.headers["x-llmops-colour"] == "blue" and r.headers["x-llmops-version"] == "1"
    assert r.json()["usage"]["completion_tokens"] >= 1
    with httpx.stream("POST", bluegreen.url + "/v1/chat/completions", json={**CHAT, "stream": True},
                      timeout=30) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        body = "".join(s.iter_text())
    assert body.rstrip().endswith("data: [DONE]") and '"chat.completion.chunk"' in body
    time.sleep(0.1)  # the scan of the last response runs after it is sent
    after = parse_metrics(bluegreen.client().metrics_text(), "blue")
    assert after.requests - before.requests == 2 and after.responses - before.responses == 2
    assert after.tokens > before.tokens and after.errors == before.errors


def test_request_to_a_dead_worker_is_retried_on_the_healthy_colour(bluegreen):  # noqa: F811
    client = bluegreen.client()
    status = client.load("green", "2", reason="retry test")
    client.weights({"blue": 50, "green": 50}, reason="retry test")
    os.kill(status["colours"]["green"]["pid"], signal.SIGKILL)
    answers = [httpx.post(bluegreen.url + "/v1/chat/completions", json=CHAT, timeout=30) for _ in range(12)]
    assert [r.status_code for r in answers] == [200] * 12
    assert {r.headers["x-llmops-colour"] for r in answers} == {"blue"}
    green = parse_metrics(client.metrics_text(), "green")
    time.sleep(0.6)
    assert green.errors >= 1 or not client.status()["colours"]["green"]["up"]
    client.weights({"blue": 100}, reason="retry test done")
    client.stop("green", reason="retry test done")
    client.close()


def test_guard_flags_pii_and_html_but_not_plain_answers():
    from serving.gateway.metrics import guard_kinds

    assert guard_kinds("Use a lambda: lambda x: x + 1") == []
    assert guard_kinds("Mail jane.doe@corp-mail.org for help") == ["pii"]
    assert guard_kinds('Click <a href="javascript:alert(1)">here</a>') == ["html"]


def test_fault_spec_parsing_and_the_plain_worker_command():
    assert parse_fault("error:0.5,after:20") == FaultSpec(error_rate=0.5, after=20)
    assert parse_fault("latency:800ms").latency_s == pytest.approx(0.8)
    for bad in ("error:2", "latency:fast", "explode:1", ""):
        with pytest.raises(InputError):
            parse_fault(bad)
    # Without a fault the worker is the plain single-model server; the fault wrapper is not in it.
    plain = worker_command("/m", 1234, "onnx", "id", None, None)
    assert plain[1:4] == ["-m", "llmops", "serve"]
    assert worker_command("/m", 1234, "onnx", "id", None, "error:1")[1:3] == ["-m", "serving.gateway.fault_worker"]


def test_fault_is_refused_unless_the_gateway_allows_it(llmops_home):
    from governance.apikeys import Principal
    from llmops.settings import Settings
    from serving.gateway.admin import AdminError, LoadRequest
    from serving.gateway.core import Gateway, GatewayOptions

    gw = Gateway(Settings(home=llmops_home), GatewayOptions(allow_faults=False))
    with pytest.raises(AdminError, match="fault injection is off"):
        asyncio.run(gw.load(LoadRequest(colour="green", version="1", fault="error:1"), Principal("t", "admin")))


def test_local_admin_token_is_private(tmp_path: Path) -> None:
    # The token grants admin on /admin/*: no other local account may read it, nor its folder.
    import stat

    from serving.gateway.admin import ADMIN_TOKEN_FILE, ensure_local_token

    folder = tmp_path / "gateway"
    token = ensure_local_token(folder)
    assert stat.S_IMODE((folder / ADMIN_TOKEN_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert ensure_local_token(folder) == token  # stable while private
    (folder / ADMIN_TOKEN_FILE).chmod(0o644)  # an older gateway's world-readable token is replaced
    assert ensure_local_token(folder) != token
    assert stat.S_IMODE((folder / ADMIN_TOKEN_FILE).stat().st_mode) == 0o600
