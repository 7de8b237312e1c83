"""Stopping child processes (servers, workers, gateways) the same way everywhere."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time


def stop_process(proc: subprocess.Popen | PidProcess, timeout: float = 10.0, *, group: bool = False) -> int | None:
    """SIGTERM, wait up to `timeout` seconds for a graceful exit (uvicorn runs its shutdown), then SIGKILL.

    `group`: signal the process group `proc` leads (started in a session of its own), so workers it
    forked (a gunicorn or mlflow server's) stop with it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM) if group else proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
            proc.wait()
    return proc.returncode


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PidProcess:
    """A running process known only by its pid (started by an earlier process, adopted by this one),
    with the part of Popen's interface that stop_process uses. Its exit status cannot be read (it
    is not our child): `returncode` is 0 once it is gone, -SIGKILL once it was killed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not pid_alive(self.pid):
            self.returncode = 0
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.05)
        return self.returncode or 0

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL; the process is then taken as gone, without waiting: not being our child, it may
        stay a zombie until its new parent reaps it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        if self.returncode is None:
            self.returncode = -signal.SIGKILL
