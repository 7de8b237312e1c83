"""The gateway's worker processes: one per colour, each the plain single-model server.

A worker is `python -m llmops serve --model DIR --port P --model-id llmops-<colour>-v<version>`
(serving/app.py), started in its own session, so a bad version cannot take the good one down and
a gateway crash does not take either; with a fault to inject it is `python -m
serving.gateway.fault_worker` instead (serving/gateway/faults.py). Its output goes to
`<home>/gateway/logs/<colour>.log`. Waiting for /readyz is the gateway's (serving/gateway/core.py),
with llmops.launch.wait_ready_async; stopping is llmops.processes.stop_process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from llmops.launch import free_port, log_tail, start_process
from llmops.processes import PidProcess, stop_process
from serving.gateway.faults import FAULT_ENV
from serving.gateway.state import model_id


class Worker:
    """One worker process: started by this gateway (proc) or adopted after a restart (pid only)."""

    def __init__(self, colour: str, port: int, pid: int, proc: subprocess.Popen | None, log: Path) -> None:
        self.colour, self.port, self.pid, self.log = colour, port, pid, log
        self.proc: subprocess.Popen | PidProcess = proc if proc is not None else PidProcess(pid)
        self.url = f"http://127.0.0.1:{port}"
        self.up = False

    def alive(self) -> bool:
        return self.proc.poll() is None  # for our own child, poll() also reaps the zombie

    def stop(self, timeout: float = 10.0) -> None:
        self.up = False
        stop_process(self.proc, timeout=timeout)

    def log_tail(self, chars: int = 2000) -> str:
        return log_tail(self.log, chars)


WORKER_TOKEN_ENV = "LLMOPS_WORKER_TOKEN"


def worker_command(model_dir: str, port: int, backend: str, mid: str, threads: int | None,
                   fault: str | None) -> list[str]:
    args = ["--model", model_dir, "--host", "127.0.0.1", "--port", str(port), "--backend", backend,
            "--model-id", mid]
    if threads:
        args += ["--threads", str(threads)]
    if fault:
        return [sys.executable, "-m", "serving.gateway.fault_worker", *args]
    # Behind the gateway, on loopback, which limits per client at the edge (every request here comes
    # from it) and checks the client's key there; the worker takes an API key or the gateway's
    # token (LLMOPS_WORKER_TOKEN), so another local account cannot go around the gateway.
    return [sys.executable, "-m", "llmops", "serve", *args, "--rate-limit", "off", "--auth", "keys"]


def start_worker(colour: str, version: str, model_dir: str, backend: str, *, log_dir: Path,
                 threads: int | None = None, fault: str | None = None, port: int | None = None,
                 token: str = "") -> Worker:
    """Start the worker process (not yet ready: see the module docstring). The gateway's own API key
    is not passed on; the fault spec is, in LLMOPS_FAULT, and the gateway's token for its workers
    in LLMOPS_WORKER_TOKEN."""
    port = port or free_port()
    log = log_dir / f"{colour}.log"
    cmd = worker_command(model_dir, port, backend, model_id(colour, version), threads, fault)
    env = {k: v for k, v in os.environ.items() if k not in (FAULT_ENV, "LLMOPS_API_KEY", WORKER_TOKEN_ENV)}
    if token:
        env[WORKER_TOKEN_ENV] = token
    if fault:
        env[FAULT_ENV] = fault
    proc = start_process(cmd, log=log, env=env, new_session=True)
    return Worker(colour, port, proc.pid, proc, log)
