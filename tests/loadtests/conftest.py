"""Fixtures of the load-test tests: real servers on loopback and one real locust run, shared.

    .venv/bin/pytest tests/loadtests -q
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops.launch import free_port, running_process

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def micro_server(micro_model: Path) -> Iterator[str]:
    """Base URL of the real serving app (torch backend) over the micro model, on a free loopback port."""
    from serving.app import running_server

    with running_server(micro_model, backend="torch", threads=1) as url:
        yield url


@pytest.fixture(scope="session")
def bad_server() -> Iterator[str]:
    """Base URL of tests/loadtests/bad_server.py (500s and broken SSE streams) under uvicorn."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "tests.loadtests.bad_server:app", "--host", "127.0.0.1", "--port",
           str(port), "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}"
    with running_process(cmd, url + "/healthz", env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT,
                         timeout=30, what="bad_server"):
        yield url


@pytest.fixture(scope="session")
def passing_run(micro_server: str, tmp_path_factory: pytest.TempPathFactory):
    """(report, out_dir) of one real 5 s, 3-user run against the micro model with the repo's SLOs."""
    from loadtests.locust_runner import DEFAULT_SLO, run_loadtest

    out = tmp_path_factory.mktemp("loadtest-pass")
    return run_loadtest(micro_server, DEFAULT_SLO, out, users=3, duration=5), out
