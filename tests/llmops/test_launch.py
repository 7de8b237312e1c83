"""The launcher (llmops/launch.py) and stop_process on an adopted pid (llmops/processes.py).

    .venv/bin/pytest tests/llmops/test_launch.py -q
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from llmops.launch import LaunchError, free_port, running_app, running_process, wait_until
from llmops.processes import PidProcess, pid_alive, stop_process


def test_a_process_that_exits_early_is_reported_with_its_output_and_code() -> None:
    cmd = [sys.executable, "-c", "import sys; print('bad model folder', file=sys.stderr); sys.exit(2)"]
    with pytest.raises(LaunchError, match="exited with code 2") as info, \
            running_process(cmd, f"http://127.0.0.1:{free_port()}/readyz", what="the server", timeout=30):
        pass
    assert info.value.returncode == 2 and "bad model folder" in info.value.tail


def test_a_process_that_never_answers_times_out_and_is_stopped() -> None:
    cmd = [sys.executable, "-c", "import time; print('still loading', flush=True); time.sleep(60)"]
    with pytest.raises(LaunchError, match="was not ready within") as info, \
            running_process(cmd, f"http://127.0.0.1:{free_port()}/readyz", timeout=1.0):
        pass
    assert info.value.returncode is None and "still loading" in info.value.tail


def test_running_app_serves_in_a_thread() -> None:
    import httpx
    from fastapi import FastAPI

    app = FastAPI()
    app.get("/healthz")(lambda: {"status": "ok"})
    with running_app(app, ready_path="/healthz") as url:
        assert httpx.get(url + "/healthz").json() == {"status": "ok"}


def test_wait_until_returns_the_value_or_raises_on_timeout() -> None:
    seen = iter([None, 0, "ready"])
    assert wait_until(lambda: next(seen), timeout=5, interval=0.01) == "ready"
    with pytest.raises(TimeoutError, match="never"):
        wait_until(lambda: False, timeout=0.05, interval=0.01, on_timeout=lambda: TimeoutError("never"))


def test_stop_process_stops_a_process_known_only_by_pid() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    reaper = threading.Thread(target=proc.wait, daemon=True)  # an adopted worker's new parent reaps it
    reaper.start()
    adopted = PidProcess(proc.pid)
    assert adopted.poll() is None and pid_alive(proc.pid)
    assert stop_process(adopted, timeout=10) == 0
    reaper.join(timeout=10)
    assert proc.returncode == -signal.SIGTERM and not pid_alive(proc.pid)


def test_a_killed_pid_is_not_waited_for() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                             "signal.SIG_IGN); print('up', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # SIGTERM is ignored from here
    adopted = PidProcess(proc.pid)  # never reaped while stop_process runs: it stays a zombie
    assert stop_process(adopted, timeout=0.3) == -signal.SIGKILL
    assert proc.wait(timeout=10) == -signal.SIGKILL


def test_a_server_in_its_own_session_is_stopped_with_the_workers_it_forked(tmp_path) -> None:
    """Like `mlflow server`: the parent forks a worker; stopping the parent alone would leave it."""
    port, pid_file = free_port(), tmp_path / "worker.pid"
    script = (f"import subprocess, sys; w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
              f"open({str(pid_file)!r}, 'w').write(str(w.pid)); "
              f"import http.server; http.server.HTTPServer(('127.0.0.1', {port}), "
              f"http.server.SimpleHTTPRequestHandler).serve_forever()")
    with running_process([sys.executable, "-c", script], f"http://127.0.0.1:{port}/", cwd=tmp_path,
                         timeout=30, new_session=True, stop_timeout=5) as proc:
        worker = int(pid_file.read_text())
        assert pid_alive(worker)
    assert proc.poll() is not None
    wait_until(lambda: not pid_alive(worker) or _reaped(worker), timeout=10)


def _reaped(pid: int) -> bool:
    """A killed grandchild whose parent died is reaped by init; until then it is a zombie, not alive."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
