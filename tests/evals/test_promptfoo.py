"""promptfoo against the OpenAI-compatible endpoint, when a promptfoo CLI is already installed.

    .venv/bin/pytest tests/evals/test_promptfoo.py -q

It runs only with a `promptfoo` binary on PATH (npm i -g promptfoo@0.121.20 on Node 20, see
ENVIRONMENT.md); `npx` would download it at test time, which the suite never does, so without
the binary the test skips with that reason. The config itself is checked either way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml


def test_config_points_at_the_openai_compatible_endpoint(repo_root: Path) -> None:
    config = yaml.safe_load((repo_root / "evals" / "promptfooconfig.yaml").read_text())
    provider = config["providers"][0]
    assert provider["id"].startswith("openai:chat") and "LLMOPS_EVAL_ENDPOINT" in provider["config"]["apiBaseUrl"]
    assert len(config["tests"]) >= 5 and all(t["assert"] for t in config["tests"])


def test_promptfoo_eval_runs(repo_root: Path, stub_url: str, tmp_path: Path) -> None:
    binary = shutil.which("promptfoo")
    if binary is None:
        pytest.skip("no promptfoo CLI on PATH (install: npm i -g promptfoo@0.121.20); npx would download it")
    out = tmp_path / "results.json"
    env = {**os.environ, "LLMOPS_EVAL_ENDPOINT": stub_url, "PROMPTFOO_CONFIG_DIR": str(tmp_path / "pf")}
    proc = subprocess.run([binary, "eval", "-c", str(repo_root / "evals" / "promptfooconfig.yaml"), "-o", str(out),
                           "--no-cache"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 100), proc.stdout[-2000:] + proc.stderr[-2000:]  # 100: some test failed
    results = json.loads(out.read_text())
    assert results["results"]["stats"]["successes"] + results["results"]["stats"]["failures"] == 5
