"""Starting a server, waiting until it answers, stopping it: one way for every caller.

    with running_process(cmd, "http://127.0.0.1:8123/readyz", what="the server") as proc:
        ...                                     # GET /readyz answered 200
    with running_app(app, ready_path="/healthz") as url:
        ...                                     # an ASGI app under uvicorn in a thread of this process

Users: the single-model server (`serving.app.running_server`), the gateway's workers (the async
`wait_ready_async`, inside the gateway's event loop), the gateway test harness
(`serving.gateway.testing.running_gateway`) and the test fixtures.

A child process writes stdout and stderr into one log file. If it exits before it is ready, or is
not ready within the timeout, `LaunchError` says so with the log's tail; its `returncode` is the
exit code (None on a timeout), so a caller can map exit 2 (bad input) to its own error. Stopping
is `llmops.processes.stop_process`: SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import uvicorn

from llmops.processes import PidProcess, stop_process

__all__ = ["LaunchError", "free_port", "log_tail", "running_app", "running_process", "start_process",
           "stop_process", "wait_ready", "wait_ready_async", "wait_until"]

TAIL_CHARS = 3000
T = TypeVar("T")


class LaunchError(RuntimeError):
    """A server that exited before it was ready (`returncode` set) or was not ready in time (None)."""

    def __init__(self, message: str, *, returncode: int | None = None, tail: str = "") -> None:
        super().__init__(message)
        self.returncode, self.tail = returncode, tail


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: str | Path | None, chars: int = TAIL_CHARS) -> str:
    """The last `chars` characters of a log file; "" when there is none."""
    if path is None:
        return ""
    with contextlib.suppress(OSError):
        return Path(path).read_text(encoding="utf-8", errors="replace")[-chars:]
    return ""


def start_process(cmd: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None,
                  cwd: str | Path | None = None, new_session: bool = False) -> subprocess.Popen:
    """Start `cmd` with stdout and stderr into `log` (truncated first). `new_session`: its own
    session, so a signal to this process group (Ctrl-C) does not reach it."""
    with open(log, "wb") as handle:
        return subprocess.Popen(list(cmd), stdout=handle, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None, cwd=cwd,
                                start_new_session=new_session)


def _exited(proc: subprocess.Popen | PidProcess | None, what: str, log: Path | None) -> LaunchError | None:
    code = proc.poll() if proc is not None else None
    if code is None:
        return None
    tail = log_tail(log)
    return LaunchError(f"{what} exited with code {code}:\n{tail}", returncode=code, tail=tail)


def _timed_out(what: str, timeout: float, log: Path | None) -> LaunchError:
    tail = log_tail(log)
    return LaunchError(f"{what} was not ready within {timeout:.0f} s:\n{tail}", tail=tail)


def wait_until(check: Callable[[], T], *, timeout: float, interval: float = 0.1,
               on_timeout: Callable[[], Exception] | None = None) -> T:
    """Call `check` every `interval` seconds until it returns a true value, and return that value.
    After `timeout` seconds: raise on_timeout() (default: a LaunchError). `check` may raise to stop."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise on_timeout() if on_timeout is not None else LaunchError(f"not done within {timeout:g} s")
        time.sleep(interval)


def wait_ready(url: str, *, proc: subprocess.Popen | PidProcess | None = None, log: Path | None = None,
               timeout: float = 60.0, what: str = "the server", interval: float = 0.1,
               request_timeout: float = 2.0) -> None:
    """Poll GET `url` until it answers 200. LaunchError if `proc` exits first or `timeout` passes."""
    with httpx.Client(timeout=request_timeout) as client:

        def ready() -> bool:
            if (error := _exited(proc, what, log)) is not None:
                raise error
            with contextlib.suppress(httpx.HTTPError):
                return client.get(url).status_code == 200
            return False

        wait_until(ready, timeout=timeout, interval=interval, on_timeout=lambda: _timed_out(what, timeout, log))


async def wait_ready_async(url: str, client: httpx.AsyncClient, *, proc: subprocess.Popen | PidProcess | None = None,
                           log: Path | None = None, timeout: float = 60.0, what: str = "the server",
                           interval: float = 0.1, request_timeout: float = 2.0) -> None:
    """wait_ready inside an event loop, with the caller's AsyncClient."""
    deadline = time.monotonic() + timeout
    while True:
        if (error := _exited(proc, what, log)) is not None:
            raise error
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(url, timeout=request_timeout)).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, log)
        await asyncio.sleep(interval)


@contextlib.contextmanager
def running_process(cmd: Sequence[str], ready_url: str, *, env: Mapping[str, str] | None = None,
                    cwd: str | Path | None = None, timeout: float = 60.0, what: str = "the server",
                    stop_timeout: float = 10.0, log: Path | None = None,
                    new_session: bool = False) -> Iterator[subprocess.Popen]:
    """Start `cmd`, wait until GET `ready_url` answers 200, yield the process; stop it on exit.
    `new_session`: in a session of its own, and stopped with every process of its group.

    Its output goes to `log`, or to a temporary file removed afterwards. LaunchError (with the
    output's tail) if it exits first or is not ready within `timeout` seconds.
    """
    own_log = log is None
    if log is None:
        fd, name = tempfile.mkstemp(prefix="llmops-", suffix=".log")
        os.close(fd)
        log = Path(name)
    try:
        proc = start_process(cmd, log=log, env=env, cwd=cwd, new_session=new_session)
        try:
            wait_ready(ready_url, proc=proc, log=log, timeout=timeout, what=what)
            yield proc
        finally:
            stop_process(proc, timeout=stop_timeout, group=new_session)
    finally:
        if own_log:
            with contextlib.suppress(OSError):
                log.unlink()


@contextlib.contextmanager
def running_app(app: Any, *, host: str = "127.0.0.1", ready_path: str | None = None,
                lifespan: Literal["auto", "on", "off"] = "auto",
                timeout: float = 30.0, what: str = "the app") -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread of this process; yield its base URL once uvicorn
    has started (and GET `ready_path`, when given, answers 200); shut it down on exit.

    The listening socket is bound here, on a port the OS picks, and handed to uvicorn: no other
    process can take the port in between.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        started_at = time.monotonic()

        def started() -> bool:
            if not thread.is_alive():
                raise LaunchError(f"{what} did not start (uvicorn stopped; see its log above)")
            return bool(server.started)

        wait_until(started, timeout=timeout, interval=0.02,
                   on_timeout=lambda: LaunchError(f"{what} did not start within {timeout:.0f} s"))
        if ready_path is not None:
            left = max(1.0, timeout - (time.monotonic() - started_at))
            wait_ready(url + ready_path, timeout=left, what=what)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
