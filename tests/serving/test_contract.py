"""The gateway and its workers on a real deployment (one gateway process, blue = `production`):
the client's API key is checked at the edge, a worker takes only the gateway's token or a key, and
the served API keeps its own OpenAPI contract: schemathesis with every check (`--checks all`,
bounded examples, fixed seed) against the worker and, through the same `/v1/*` schema, against the
gateway. Settings: serving/schemathesis.toml (it says why one check is widened).

The gateway's own API (admin routes, /metrics, /healthz, /v1/feedback: its /openapi.json) is fuzzed
on a deployment of its own, since random admin calls load, shift and stop colours: once with the
admin key (schemathesis also sends each call without the key and with a wrong one: 401), once with
a `user` key, where every admin call must get a 403 and change nothing.

    .venv/bin/pytest tests/serving/test_contract.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = "20"
USER = [{"role": "user", "content": "What is a lambda?"}]


@pytest.fixture(scope="module")
def deployment(exported, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(home, keys, gateway URL, blue worker URL): a gateway serving version 1 on blue, keys on."""
    from llmops.launch import wait_until
    from serving.gateway.testing import running_gateway
    from tests.serving.bluegreen import make_home

    home, keys = make_home(tmp_path_factory.mktemp("deployment"), exported.variants["fp32"], versions=2)
    # operate on: the workers serve /v1/feedback too, so the fuzz run covers it (the gateway process
    # gets LLMOPS_HOME=home and this setting in its own environment, not this process's)
    with running_gateway(home, auth="keys", env={"LLMOPS_OPERATE": "1"}) as (url, _):
        wait_until(lambda: httpx.get(url + "/healthz", timeout=5).json()["up"].get("blue"), timeout=120,
                   interval=0.5, on_timeout=lambda: AssertionError("blue did not come up"))
        state = json.loads((home / "gateway" / "state.json").read_text())
        yield home, keys, url, f"http://127.0.0.1:{state['colours']['blue']['port']}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def admin_deployment(exported, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(home, keys, gateway URL): a gateway of its own for the admin fuzz, blue = version 1."""
    from llmops.launch import wait_until
    from serving.gateway.testing import running_gateway
    from tests.serving.bluegreen import make_home

    home, keys = make_home(tmp_path_factory.mktemp("admin"), exported.variants["fp32"], versions=2)
    with running_gateway(home, auth="keys") as (url, _):
        wait_until(lambda: httpx.get(url + "/healthz", timeout=5).json()["up"].get("blue"), timeout=120,
                   interval=0.5, on_timeout=lambda: AssertionError("blue did not come up"))
        yield home, keys, url


def fuzz(schema: str, key: str, work: Path, base_url: str | None = None, config: Path | None = None,
         *extra: str) -> subprocess.CompletedProcess:
    st = Path(sys.executable).with_name("st")
    cmd = [str(st), "--config-file", str(config or REPO / "serving" / "schemathesis.toml"), "--no-color", "run",
           schema, "--checks", "all", "-n", EXAMPLES, "--seed", "20261130", "-H", f"Authorization: Bearer {key}",
           *extra]
    if base_url:
        cmd += ["--url", base_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)


def summary(run: subprocess.CompletedProcess) -> str:
    out = run.stdout + run.stderr
    return out[out.find("FAILURES"):][:6000] if "FAILURES" in out else out[-3000:]


def test_the_gateway_checks_the_key_and_its_workers_take_only_the_gateway_or_a_key(deployment) -> None:
    home, keys, url, worker = deployment
    r = httpx.post(url + "/v1/chat/completions", json={"messages": USER}, timeout=30)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
    served = httpx.post(url + "/v1/chat/completions", json={"messages": USER, "max_tokens": 4}, timeout=60,
                        headers=bearer(keys["user"]))
    assert served.status_code == 200 and served.headers["x-llmops-colour"] == "blue", served.text
    # around the gateway, straight to its worker: no key, no entry; the gateway's token or a key: in
    assert httpx.get(worker + "/v1/models", timeout=10).status_code == 401
    token_file = home / "gateway" / "worker.token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert httpx.get(worker + "/v1/models", headers=bearer(token_file.read_text().strip()), timeout=10).status_code == 200
    assert httpx.get(worker + "/v1/models", headers=bearer(keys["user"]), timeout=10).status_code == 200


def test_the_worker_keeps_its_openapi_contract(deployment, tmp_path: Path) -> None:
    _, keys, _, worker = deployment
    schema = httpx.get(worker + "/openapi.json", timeout=10).json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/feedback"} <= set(schema["paths"])
    run = fuzz(worker + "/openapi.json", keys["admin"], tmp_path)
    assert run.returncode == 0, summary(run)
    assert " passed" in run.stdout and "failures" not in run.stdout.split("Test cases:")[-1]


def test_the_gateway_keeps_the_same_contract_on_v1(deployment, tmp_path: Path) -> None:
    _, keys, url, worker = deployment
    schema = httpx.get(worker + "/openapi.json", timeout=10).json()
    # the model API behind the gateway: its /v1/* routes, fuzzed at the gateway's address
    schema["paths"] = {p: ops for p, ops in schema["paths"].items() if p.startswith("/v1/")}
    (tmp_path / "openapi.json").write_text(json.dumps(schema))
    run = fuzz(str(tmp_path / "openapi.json"), keys["admin"], tmp_path, base_url=url)
    assert run.returncode == 0, summary(run)


ADMIN = ("/admin/status", "/admin/load", "/admin/weights", "/admin/promote", "/admin/rollback", "/admin/stop",
         "/metrics")


def test_the_gateway_serves_an_admin_contract_that_names_every_answer(admin_deployment) -> None:
    _, keys, url = admin_deployment
    schema = httpx.get(url + "/openapi.json", timeout=10).json()
    assert set(ADMIN) | {"/v1/feedback", "/healthz"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["HTTPBearer"][
            "description"]}
    for path in ADMIN:
        (op,) = schema["paths"][path].values()
        assert op["security"] == [{"HTTPBearer": []}] and {"401", "403"} <= set(op["responses"]), path
        assert "422" not in op["responses"], path  # a bad body is a 400 naming the field, as on /v1/*
    assert set(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert {"400", "409", "413", "500", "504"} <= set(schema["paths"]["/admin/load"]["post"]["responses"])
    assert "409" in schema["paths"]["/v1/feedback"]["post"]["responses"]
    # without a key: 401 before the body is looked at; a bad body with the key: 400 naming the field
    for path in ADMIN:
        method = "GET" if path in ("/admin/status", "/metrics") else "POST"
        r = httpx.request(method, url + path, json={"colour": "purple"}, timeout=10)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.text)
        assert r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(url + "/admin/rollback", json={"colour": "purple"}, timeout=10, headers=bearer(keys["admin"]))
    assert r.status_code == 400 and r.json()["error"]["param"] == "colour", r.text


def test_the_admin_api_refuses_every_call_of_a_role_without_the_permission(admin_deployment, tmp_path: Path) -> None:
    home, keys, url = admin_deployment
    from governance.audit import read_entries

    def audit_actions(home: Path) -> list[dict]:
        return [entry for _, entry in read_entries(home / "audit" / "audit.jsonl") if entry]

    before = len(audit_actions(home))
    def served() -> dict:
        state = httpx.get(url + "/admin/status", headers=bearer(keys["admin"]), timeout=10).json()
        return {c: (s["version"], s["weight"], s["pid"]) for c, s in state["colours"].items()}

    status = served()
    # every call of the `user` role, whatever its body, gets a 403: any other answer fails the run
    config = tmp_path / "schemathesis.toml"
    config.write_text("""[[operations]]
include-path-regex = "^/(admin/|metrics$)"
checks.positive_data_acceptance.expected-statuses = ["403"]
checks.negative_data_rejection.expected-statuses = ["403"]
""")
    run = fuzz(url + "/openapi.json", keys["user"], tmp_path, None, config, "--include-path-regex",
               "^/(admin/|metrics$)")
    assert run.returncode == 0, summary(run)
    assert " passed" in run.stdout, run.stdout[-3000:]
    added = audit_actions(home)[before:]
    assert added and {e["action"] for e in added} == {"role.denied"}, {e["action"] for e in added}
    assert {e["details"]["permission"] for e in added} == {"metrics.read", "deploy.load", "deploy.weights",
                                                           "rollback"}
    assert served() == status


def test_the_gateway_admin_api_keeps_its_contract(admin_deployment, tmp_path: Path) -> None:
    home, keys, url = admin_deployment
    # a load starts a worker (seconds on a busy machine), and the calls after it wait for it
    run = fuzz(url + "/openapi.json", keys["admin"], tmp_path, None, None, "--request-timeout", "180")
    assert run.returncode == 0, summary(run)
    assert " passed" in run.stdout and "failures" not in run.stdout.split("Test cases:")[-1]
    # the fuzz really changed things, each change is in the audit log, and its chain still verifies
    # with the fuzzed reasons in it (U+2028 and the like: the log splits lines on b"\n" only)
    from governance.audit import read_entries, verify

    log = home / "audit" / "audit.jsonl"
    actions = {entry["action"] for _, entry in read_entries(log) if entry}
    assert {"deploy.load", "deploy.weights"} <= actions, actions
    assert verify(log) == []
    # ... and the gateway still answers
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200
