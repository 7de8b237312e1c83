"""The gateway and its workers on a real deployment (one gateway process, blue = `production`):
the client's API key is checked at the edge, a worker takes only the gateway's token or a key, and
the served API keeps its own OpenAPI contract: schemathesis with every check (`--checks all`,
bounded examples, fixed seed) against the worker and, through the same `/v1/*` schema, against the
gateway. Settings: serving/schemathesis.toml (it says why one check is widened).

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


def fuzz(schema: str, key: str, work: Path, base_url: str | None = None) -> subprocess.CompletedProcess:
    st = Path(sys.executable).with_name("st")
    cmd = [str(st), "--config-file", str(REPO / "serving" / "schemathesis.toml"), "--no-color", "run", schema,
           "--checks", "all", "-n", EXAMPLES, "--seed", "20261130", "-H", f"Authorization: Bearer {key}"]
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
