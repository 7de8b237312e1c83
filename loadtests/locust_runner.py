"""Run the locustfile against a loopback server and gate its numbers against the SLOs.

    llmops loadtest --model exports/v1/fp32 --users 4 --duration 20s --out .llmops/reports/loadtest

`run_loadtest(target_url, slo, out_dir)` is the core the CLI and the merge pipeline call: it runs
locust headless as its own process (its gevent monkey-patching cannot share a process that has
imported ssl or requests), bounded in users and time, with a hard timeout on the subprocess.
It parses locust's stats CSV and the locustfile's per-request samples (JSONL), checks every SLO
and writes into `out_dir`: report.json + report.md (kind "loadtest"), latency.png, and the raw
locust_stats.csv, locust_failures.csv, samples.jsonl and locust.log.

Where each gated number comes from:
  error_rate, requests_per_s: locust's stats CSV, its own counting of the HTTP rows (TTFT/TPS
      rows left out). requests_per_s counts successful requests only. The locustfile rewrites the
      CSV with the final stats at exit (locust's own last write can be up to 1 s old).
  p95_latency_ms, ttft_p95_ms, tokens_per_s: the samples file, successful requests only, exact
      (linear interpolation). Without a samples file: the CSV's rows, whose percentiles come from
      locust's rounded histogram (1 ms below 100 ms, 10 ms below 1 s) and include failures.
A number that cannot be measured (no successful request of that kind) breaches its SLO.
"""

from __future__ import annotations

import contextlib
import csv
import io
import ipaddress
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmops.dataset import read_jsonl  # the project's one JSONL reader: errors name file and line
from llmops.errors import InputError
from llmops.files import atomic_write_bytes
from llmops.launch import log_tail, start_process
from llmops.report import Finding, Metric, Report
from loadtests.slo import SLOConfig, load_slo, validate_slo

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
DEFAULT_SLO = Path(__file__).resolve().with_name("slo.yaml")
# Entry names the locustfile uses (not imported from it: importing locust monkey-patches this process).
CHAT_NAME = "/v1/chat/completions"
REQUEST_TYPES_PSEUDO = ("TTFT", "TPS")  # custom-metric rows the locustfile fires; not HTTP requests
STOP_TIMEOUT_S = 5  # users finish their in-flight request for up to this long after the run time
# Locust's own start (imports, gevent patching) plus writing stats; generous for a loaded 2-core box.
STARTUP_SLACK_S = 60


# ---- the target -------------------------------------------------------------------------------
def check_loopback(target_url: str) -> str:
    """Return the URL without a trailing slash; InputError (exit 2) unless it is http(s) on loopback."""
    parts = urlsplit(target_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"expected an http(s) URL such as http://127.0.0.1:8000, got {target_url!r}",
                         field="target")
    host = parts.hostname
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = ipaddress.ip_address(host).is_loopback
    if not loopback:
        raise InputError(f"refusing to load-test {host!r}: only loopback targets (127.0.0.0/8, ::1, localhost) "
                         "are allowed", field="target")
    return target_url.rstrip("/")


# ---- running locust -----------------------------------------------------------------------------
@dataclass
class LocustRun:
    """Where one locust run left its files, and how it ended."""

    stats_csv: Path
    failures_csv: Path
    samples: Path
    log: Path
    returncode: int
    wall_s: float


def run_locust(target_url: str, cfg: SLOConfig, work_dir: Path, *, eval_set: Path | None = None,
               api_key: str | None = None) -> LocustRun:
    """Run loadtests/locustfile.py headless in its own process group; kill it at the hard timeout.

    InputError when locust exits non-zero (it could not start: a bad eval set, a bad env value);
    its log's tail is in the message. A run that passes the hard timeout is killed and reported
    the same way, naming the timeout.
    """
    run = cfg.run
    work_dir = Path(work_dir).resolve()  # locust runs with cwd=work_dir: relative paths would nest
    prefix = work_dir / "locust"
    samples = work_dir / "samples.jsonl"
    log = work_dir / "locust.log"
    run_time_s = max(1, math.ceil(run.duration))
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", target_url,
           "--users", str(run.users), "--spawn-rate", f"{run.spawn_rate:g}", "--run-time", f"{run_time_s}s",
           "--stop-timeout", str(STOP_TIMEOUT_S), "--csv", str(prefix), "--only-summary",
           # Failed requests are our gate's business, not locust's exit code: non-zero means it broke.
           "--exit-code-on-error", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOADTEST_", "LOCUST_"))}
    env.update({
        "LOADTEST_MAX_TOKENS": str(run.max_tokens),
        "LOADTEST_CHAT_WEIGHT": str(run.chat_weight),
        "LOADTEST_STREAM_WEIGHT": str(run.stream_weight),
        "LOADTEST_THINK_TIME_S": f"{run.think_time_s:g}",
        "LOADTEST_SAMPLES": str(samples),
        "PYTHONUNBUFFERED": "1",
    })
    if eval_set is not None:
        env["LOADTEST_EVAL_SET"] = str(Path(eval_set).resolve())
    key = api_key if api_key is not None else os.environ.get("LOADTEST_API_KEY")
    if key:
        env["LOADTEST_API_KEY"] = key
    # Spawning all users takes users/spawn_rate seconds on top of the run time.
    hard_timeout = run_time_s + run.users / run.spawn_rate + STOP_TIMEOUT_S + STARTUP_SLACK_S
    started = time.monotonic()
    # cwd=work_dir: locust reads locust.conf / pyproject.toml from its cwd; ours must not leak in.
    proc = start_process(cmd, log=log, env=env, cwd=work_dir, new_session=True)
    try:
        code = proc.wait(timeout=hard_timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only locust and its children
        proc.wait()
        raise InputError(f"locust did not finish within the hard timeout of {hard_timeout:.0f} s:\n"
                         f"{_tail(log)}", file=str(LOCUSTFILE)) from None
    wall_s = time.monotonic() - started
    if code != 0:
        raise InputError(f"locust exited with code {code}:\n{_tail(log)}", file=str(LOCUSTFILE))
    stats_csv = Path(f"{prefix}_stats.csv")
    if not stats_csv.is_file():
        raise InputError(f"locust wrote no stats CSV ({stats_csv.name}):\n{_tail(log)}", file=str(LOCUSTFILE))
    return LocustRun(stats_csv, Path(f"{prefix}_failures.csv"), samples, log, code, wall_s)


def _tail(path: Path, chars: int = 2000) -> str:
    return log_tail(path, chars) if path.is_file() else "(no log)"


# ---- parsing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatsRow:
    """One row of locust's `<prefix>_stats.csv`. Times in ms (TPS rows: tokens/s), rates per second."""

    type: str
    name: str
    requests: int
    failures: int
    median: float
    average: float
    rps: float
    percentiles: dict[str, float]  # "95%" -> value


STATS_COLUMNS = ("Type", "Name", "Request Count", "Failure Count", "Median Response Time",
                 "Average Response Time", "Requests/s", "95%")


def parse_stats_csv(path: Path) -> list[StatsRow]:
    """Rows of a locust stats CSV, the "Aggregated" row included (type ""). InputError names file:line
    and column when the file is not one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read locust stats: {exc.strerror or exc}", file=str(path)) from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in STATS_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"not a locust stats CSV: missing column(s) {', '.join(missing)}", file=str(path),
                         line=1, field=missing[0])
    rows = []
    for line, rec in enumerate(reader, start=2):
        try:
            pct = {k: _num(v) for k, v in rec.items() if k and k.endswith("%")}
            rows.append(StatsRow(type=rec["Type"], name=rec["Name"], requests=int(rec["Request Count"]),
                                 failures=int(rec["Failure Count"]), median=_num(rec["Median Response Time"]),
                                 average=_num(rec["Average Response Time"]), rps=_num(rec["Requests/s"]),
                                 percentiles=pct))
        except (TypeError, ValueError) as exc:
            raise InputError(f"bad value: {exc}", file=str(path), line=line) from None
    return rows


def _num(value: str | None) -> float:
    # Locust writes "N/A" for percentiles of an entry without requests.
    if value in (None, "", "N/A"):
        return math.nan
    return float(value)


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The locustfile's per-request JSON lines; [] when the file is absent. InputError names file:line."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for number, row in read_jsonl(path):
        if not isinstance(row, dict) or "task" not in row or "ok" not in row:
            raise InputError("expected an object with 'task' and 'ok'", file=str(path), line=number)
        out.append(row)
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated q-th percentile (0-100), numpy's default method; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# ---- the gate -----------------------------------------------------------------------------------
def evaluate(cfg: SLOConfig, rows: list[StatsRow], samples: list[dict[str, Any]],
             failures: list[dict[str, str]] | None = None) -> Report:
    """Compare the run's numbers with every SLO. A number that could not be measured fails its SLO."""
    slo = cfg.slo
    http = [r for r in rows if r.type and r.type not in REQUEST_TYPES_PSEUDO]
    requests = sum(r.requests for r in http)
    failed = sum(r.failures for r in http)
    error_rate = failed / requests if requests else None
    # Locust's Requests/s counts failures too; a server that fails fast must not pass on throughput.
    rps = sum(r.rps for r in http) * (1 - error_rate) if requests and error_rate is not None else None

    streams = [s for s in samples if s.get("task") == "stream" and s.get("ok")]
    chats = [float(s["latency_ms"]) for s in samples if s.get("task") == "chat" and s.get("ok")]
    ttfts = [float(s["ttft_ms"]) for s in streams if s.get("ttft_ms") is not None]
    rates = [float(s["tokens_per_s"]) for s in streams if s.get("tokens_per_s") is not None]
    p95 = percentile(chats, 95)
    ttft_p95 = percentile(ttfts, 95)
    tps_p50 = percentile(rates, 50)
    source = "samples"
    if not samples:  # a run without the samples file (plain locust CSV): fall back to its rows, which
        source = "csv"  # include failed requests in the latency percentiles
        chat = next((r for r in http if r.name == CHAT_NAME and r.requests > r.failures), None)
        ttft_row = next((r for r in rows if r.type == "TTFT" and r.requests), None)
        tps_row = next((r for r in rows if r.type == "TPS" and r.requests), None)
        p95 = _known(chat.percentiles.get("95%")) if chat else None
        ttft_p95 = _known(ttft_row.percentiles.get("95%")) if ttft_row else None
        tps_p50 = _known(tps_row.percentiles.get("50%")) if tps_row else None

    report = Report(kind="loadtest")

    def gate(name: str, value: float | None, threshold: float, higher_is_better: bool) -> None:
        ok = value is not None and (value >= threshold if higher_is_better else value <= threshold)
        report.metrics[name] = Metric(head=value, threshold=threshold, passed=ok, higher_is_better=higher_is_better)

    gate("p95_latency_ms", p95, slo.p95_latency_ms, higher_is_better=False)
    gate("ttft_p95_ms", ttft_p95, slo.ttft_p95_ms, higher_is_better=False)
    gate("error_rate", error_rate, slo.max_error_rate, higher_is_better=False)
    gate("requests_per_s", rps, slo.min_requests_per_s, higher_is_better=True)
    gate("tokens_per_s", tps_p50, slo.min_tokens_per_s, higher_is_better=True)
    # Context, not gated (passed=None): what a reader needs to judge the gated numbers.
    stream_lat = [float(s["latency_ms"]) for s in streams]
    tokens = sum(int(s.get("completion_tokens") or 0) for s in samples if s.get("ok"))
    starts = [float(s["start"]) for s in samples]
    span = (max(starts) - min(starts)) if len(starts) > 1 else None
    for name, value in {
        "requests": float(requests), "failures": float(failed),
        "requests_in_samples": float(len(samples)),
        "stream_p95_latency_ms": percentile(stream_lat, 95),
        "ttft_p50_ms": percentile(ttfts, 50),
        "tokens_per_s_p05": percentile(rates, 5),
        "decode_tokens_per_s_p50": percentile(
            [float(s["decode_tokens_per_s"]) for s in streams if s.get("decode_tokens_per_s") is not None], 50),
        "throughput_tokens_per_s": tokens / span if span else None,
    }.items():
        report.metrics[name] = Metric(head=value, higher_is_better=name.startswith(("tokens", "throughput", "decode")))

    findings = []
    for name, m in report.metrics.items():
        if m.passed is False:
            what = "could not be measured (no samples)" if m.head is None else f"is {m.head:.4g}"
            bound = "at least" if m.higher_is_better else "at most"
            findings.append(Finding(message=f"{name} {what}; the SLO is {bound} {m.threshold:g}",
                                    file="loadtests/slo.yaml", field=f"slo.{_SLO_FIELD[name]}"))
    report.add_check("slo", findings, summary=f"{len(findings)} SLO(s) breached" if findings else "all SLOs met")
    errors = [Finding(message=f"{f.get('Method', '')} {f.get('Name', '')}: {f.get('Error', '')} "
                              f"(x{f.get('Occurrences', '?')})", severity="warning")
              for f in (failures or [])]
    if errors:
        report.add_check("request errors", errors, summary=f"{failed} failed request(s)")
    report.info.update({"requests": requests, "failures": failed, "ttft_tps_source": source})
    return report


def _known(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


_SLO_FIELD = {"p95_latency_ms": "p95_latency_ms", "ttft_p95_ms": "ttft_p95_ms", "error_rate": "max_error_rate",
              "requests_per_s": "min_requests_per_s", "tokens_per_s": "min_tokens_per_s"}


def read_failures_csv(path: Path) -> list[dict[str, str]]:
    if not Path(path).is_file():
        return []
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# ---- the picture --------------------------------------------------------------------------------
def plot_latency(samples: list[dict[str, Any]], cfg: SLOConfig, path: Path) -> Path:
    """Histograms of non-streaming latency, streaming latency and TTFT (ms) with the SLO lines; atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [
        ("chat latency (ms)", [s["latency_ms"] for s in samples if s["task"] == "chat" and s["ok"]],
         cfg.slo.p95_latency_ms),
        ("stream latency (ms)", [s["latency_ms"] for s in samples if s["task"] == "stream" and s["ok"]], None),
        ("time to first token (ms)", [s["ttft_ms"] for s in samples if s.get("ttft_ms") is not None],
         cfg.slo.ttft_p95_ms),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (title, values, slo_line) in zip(axes, series, strict=True):
        if values:
            ax.hist(values, bins=min(40, max(5, len(values) // 4)), color="#4c72b0")
            p95 = percentile(values, 95)
            ax.axvline(p95, color="#dd8452", linestyle="--", label=f"p95 {p95:.1f}")
            if slo_line is not None and slo_line <= max(values) * 1.5:
                ax.axvline(slo_line, color="#c44e52", label=f"SLO p95 <= {slo_line:g}")
            elif slo_line is not None:  # far off the right edge: name it rather than squash the bins
                ax.plot([], [], color="#c44e52", label=f"SLO p95 <= {slo_line:g} (off scale)")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{title}, n={len(values)}", fontsize=10)
        ax.set_ylabel("requests")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


# ---- the core -----------------------------------------------------------------------------------
def run_loadtest(target_url: str, slo: SLOConfig | str | Path = DEFAULT_SLO, out_dir: str | Path =
                 Path(".llmops/reports/loadtest"), users: int | None = None, duration: float | None = None,
                 *, eval_set: str | Path | None = None, api_key: str | None = None,
                 info: dict[str, Any] | None = None) -> Report:
    """Load-test `target_url` (loopback only) and write the gate's report into `out_dir`.

    `users`/`duration` (seconds) override the SLO file's run bounds; `info` is added to the report's
    info (e.g. {"model": path}). Returns the Report; the caller
    decides what a failed verdict means (the CLI raises GateFailed). Raises InputError for a
    non-loopback target, a bad SLO file or a locust run that could not start.
    """
    target_url = check_loopback(target_url)
    cfg = slo if isinstance(slo, SLOConfig) else load_slo(slo)
    overrides: dict[str, Any] = {}
    if users is not None:
        overrides["users"] = users
    if duration is not None:
        overrides["duration"] = duration
    if overrides:
        data = cfg.model_dump()
        data["run"].update(overrides)
        cfg = validate_slo(data, "command-line overrides")
    if eval_set is not None and not Path(eval_set).is_file():
        raise InputError("eval set not found", file=str(eval_set))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("report.json", "report.md"):  # an old verdict must not outlive a run that makes none
        (out / stale).unlink(missing_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".loadtest-", dir=out))
    try:
        run = run_locust(target_url, cfg, work, eval_set=Path(eval_set) if eval_set else None, api_key=api_key)
        rows = parse_stats_csv(run.stats_csv)
        samples = read_samples(run.samples)
        report = evaluate(cfg, rows, samples, read_failures_csv(run.failures_csv))
        report.info.update({"endpoint": target_url, "users": cfg.run.users, "spawn_rate": cfg.run.spawn_rate,
                            "duration_s": cfg.run.duration, "max_tokens": cfg.run.max_tokens,
                            "chat_weight": cfg.run.chat_weight, "stream_weight": cfg.run.stream_weight,
                            "think_time_s": cfg.run.think_time_s, "locust_wall_s": round(run.wall_s, 2),
                            "histogram": "latency.png", **(info or {})})
        plot_latency(samples, cfg, out / "latency.png")
        # Raw evidence beside the report; each rename is atomic within one filesystem.
        for src, name in ((run.stats_csv, "locust_stats.csv"), (run.failures_csv, "locust_failures.csv"),
                          (run.samples, "samples.jsonl"), (run.log, "locust.log")):
            if src.is_file():
                os.replace(src, out / name)
        report.write(out)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)
