"""The job benchmarks: a whole job timed under realistic conditions, in one run, as plain numbers.

    llmops bench gate                 # `llmops gate pr` on a prompt edit: cold cache, then an unchanged re-run
    llmops bench rollback             # (= llmops gateway bench-rollback) a rollback under load, seconds
    llmops bench guards --model DIR   # the load test against the model with its guards off, then on: p95 ratio

Speed targets live in the benchmarks and README.md, never in tests. These drive jobs (the PR
gate, the release job's rollback, the load-test gate), so they sit in the job layer; the stage benchmarks that need
no job stay with their stage: serving/bench.py (`llmops bench serve`, tokens/s per backend) and
the gateway's bench_gateway (`llmops bench gateway`, the gateway's added latency). The `llmops
bench` group (llmops/cli/bench.py) lists them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmops.errors import InputError
from llmops.jobs.pr_gate import _git, resolve_model, run_pr_gate
from llmops.jobs.release import rollback
from llmops.settings import Settings
from loadtests.locust_runner import run_loadtest
from serving.app import running_server
from serving.gateway import GatewayClient, other
from serving.gateway.testing import TrafficLoop


def bench_gate(settings: Settings, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Time the gate on a typical change (a prompt edit) in a scratch clone: cold cache, then unchanged re-run.

    The model under test (production, else the main job's candidate, else the untuned base model) is
    resolved first and timed apart: it is built once per machine.
    """
    import os
    import shutil
    import tempfile

    files = _git(settings.root, "ls-files", "--cached", "--others", "--exclude-standard").split("\n")
    with tempfile.TemporaryDirectory(prefix="llmops-bench-gate-") as tmp:
        repo = Path(tmp) / "repo"
        for rel in filter(None, files):
            if (settings.root / rel).is_file():
                (repo / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(settings.root / rel, repo / rel)
        ident = ["-c", "user.email=bench@llmops", "-c", "user.name=bench"]
        _git(repo, "init", "-q", "-b", "main")
        _git(repo, *ident, "add", "-A")
        _git(repo, *ident, "commit", "-qm", "main")
        _git(repo, "checkout", "-q", "-b", "change")
        prompt = repo / "prompts" / "answer.yaml"
        prompt.write_text(prompt.read_text().replace("You answer questions about the Python programming language.",
                                                     "You answer questions about the Python programming language "
                                                     "concisely."))
        scratch = Settings(root=repo, home=Path(tmp) / "home")
        # Share the built default model, not the result cache: the cold run must call the model.
        (scratch.home).mkdir(parents=True)
        start = time.perf_counter()
        model = resolve_model(settings, echo=lambda _: None)
        model_seconds = time.perf_counter() - start
        if settings.model_store.is_dir():
            os.symlink(settings.model_store, scratch.model_store)
        timings = {}
        for run in ("cold", "cached"):
            start = time.perf_counter()
            report = run_pr_gate(scratch, base="main", out_dir=Path(tmp) / run, model_dir=model.model_dir,
                                 endpoint=model.endpoint, echo=lambda _: None)
            timings[run] = round(time.perf_counter() - start, 2)
            echo(f"{run:6}: {timings[run]:6.2f} s  verdict {report.verdict}, {report.info['eval']}")
    return {"model": model.description, "model_ready_s": round(model_seconds, 2), **timings,
            "cases": report.info["eval"]["cases"], "rows": report.info["eval"]["rows"]}


def bench_rollback(gateway_url: str, *, settings: Settings | None = None, users: int = 4,
                   load_s: float = 2.0) -> dict[str, Any]:
    """Under load (TrafficLoop), roll back from the stable colour to the warm other one and measure the
    time from the call to the first moment after which every new request lands on the target colour.
    Needs both colours warm. Returns seconds and the failed-request count."""
    settings = settings or Settings.load()
    client = GatewayClient(gateway_url, settings)
    try:
        status = client.status()
        stable = status["stable"]
        if stable is None or not status["colours"][other(stable)]["up"]:
            raise InputError("bench rollback needs a stable colour and a warm other colour (run a release first)")
        target = other(stable)
        with TrafficLoop(gateway_url, users=users) as load:
            time.sleep(load_s)
            called = time.monotonic()
            result = rollback(reason="bench rollback", settings=settings, gateway_url=gateway_url,
                              log=lambda *_: None)
            time.sleep(load_s)
        on_target = load.all_on(target, called)
        return {"from": stable, "to": result["colour"], "command_s": round(result["switch_s"], 4),
                "traffic_s": round(on_target - called, 4) if on_target is not None else None,
                "requests": len(load.records), "failed": load.failed, "users": users}
    finally:
        client.close()


GUARD_OVERHEAD_GOAL = 1.3  # issue 14: serving p95 with every guard at most 1.3x without them
_LOAD_METRICS = ("p95_latency_ms", "ttft_p95_ms", "requests_per_s", "tokens_per_s", "error_rate")


def bench_guards(model_dir: Path, out_dir: Path, *, backend: str = "onnx", users: int = 4, duration: float = 30.0,
                 echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The guards' cost under load: the load test (locust, loadtests/locust_runner.py) against the same model
    served twice on loopback, guards off (LLMOPS_GUARDS=0) then on, same users, duration and questions.

    Returns each run's p95 latency, p95 time to first token, requests/s, tokens/s and error rate, and
    the on/off ratios; `goal_met` says whether p95 with the guards is within GUARD_OVERHEAD_GOAL.
    Each run's locust report lands in out_dir/off and out_dir/on. A run with errors has no honest
    latency, so its ratio is None and the goal is not met.
    """
    runs: dict[str, dict[str, float | None]] = {}
    for name, flag in (("off", "0"), ("on", "1")):
        with running_server(model_dir, backend=backend, env={"LLMOPS_GUARDS": flag}) as url:
            report = run_loadtest(url, out_dir=out_dir / name, users=users, duration=duration,
                                  info={"model": str(model_dir), "guards": name})
        runs[name] = {k: report.metrics[k].head for k in _LOAD_METRICS}
        echo(f"guards {name:3}: " + ", ".join(f"{k} {v:.4g}" for k, v in runs[name].items() if v is not None))
    clean = all(r["error_rate"] == 0 for r in runs.values())

    def ratio(metric: str) -> float | None:
        on, off = runs["on"][metric], runs["off"][metric]
        return on / off if clean and on is not None and off else None

    ratios = {k: ratio(k) for k in _LOAD_METRICS if k != "error_rate"}
    p95 = ratios["p95_latency_ms"]
    met = p95 is not None and p95 <= GUARD_OVERHEAD_GOAL
    echo(f"p95 with guards / without: {'n/a' if p95 is None else round(p95, 3)}"
         f" (goal <= {GUARD_OVERHEAD_GOAL}: {'met' if met else 'NOT met'})")
    return {"model": str(model_dir), "backend": backend, "users": users, "duration_s": duration, "runs": runs,
            "ratio_on_off": ratios, "goal_p95_ratio": GUARD_OVERHEAD_GOAL, "goal_met": met}
