"""Fixtures of the load-test tests: real servers on loopback and one real locust run, shared.

    .venv/bin/pytest tests/loadtests -q
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops.processes import stop_process

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
    import httpx

    from serving.app import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "tests.loadtests.bad_server:app", "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning"], cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None, "bad_server exited"
            assert time.monotonic() < deadline, "bad_server not up within 30 s"
            time.sleep(0.1)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def passing_run(micro_server: str, tmp_path_factory: pytest.TempPathFactory):
    """(report, out_dir) of one real 5 s, 3-user run against the micro model with the repo's SLOs."""
    from loadtests.runner import DEFAULT_SLO, run_loadtest

    out = tmp_path_factory.mktemp("loadtest-pass")
    return run_loadtest(micro_server, DEFAULT_SLO, out, users=3, duration=5), out
