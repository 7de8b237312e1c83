"""The served API keeps its own OpenAPI contract: schemathesis with every check (`--checks all`,
bounded examples, fixed seed) against a real worker and, through the same schema, against a real
gateway in front of one. Settings: serving/schemathesis.toml (it says why one check is widened).

    .venv/bin/pytest tests/serving/test_contract.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serving.app import running_server

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = "25"


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


def test_the_worker_keeps_its_openapi_contract(exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.serving.bluegreen import make_home

    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))  # make_home sets it; restored after the test
    home, keys = make_home(tmp_path, exported.variants["fp32"], versions=2)
    with running_server(exported.out_dir, model_id="micro", threads=1, auth="keys",
                        env={"LLMOPS_HOME": str(home), "LLMOPS_OPERATE": "1"}) as url:
        schema = httpx.get(url + "/openapi.json", timeout=10).json()
        assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/feedback"} <= set(schema["paths"])
        run = fuzz(url + "/openapi.json", keys["admin"], tmp_path)
    assert run.returncode == 0, summary(run)
    assert " passed" in run.stdout and "failures" not in run.stdout.split("Test cases:")[-1]


def test_the_gateway_keeps_the_same_contract_on_v1(exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.gateway.testing import running_gateway
    from tests.serving.bluegreen import make_home

    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    home, keys = make_home(tmp_path, exported.variants["fp32"], versions=2)
    with running_server(exported.out_dir, model_id="micro", threads=1, env={"LLMOPS_HOME": str(home)}) as worker:
        schema = httpx.get(worker + "/openapi.json", timeout=10).json()
    # the model API behind the gateway: its /v1/* routes, fuzzed at the gateway's address
    schema["paths"] = {p: ops for p, ops in schema["paths"].items() if p.startswith("/v1/")}
    (tmp_path / "openapi.json").write_text(json.dumps(schema))
    with running_gateway(home, auth="keys") as (url, _):
        from llmops.launch import wait_until

        # a fresh gateway serves `production` (version 1) on blue
        wait_until(lambda: httpx.get(url + "/healthz", timeout=5).json()["up"].get("blue"), timeout=120,
                   interval=0.5, on_timeout=lambda: AssertionError("blue did not come up"))
        assert httpx.get(url + "/v1/models", timeout=10).status_code == 401
        run = fuzz(str(tmp_path / "openapi.json"), keys["admin"], tmp_path, base_url=url)
    assert run.returncode == 0, summary(run)
