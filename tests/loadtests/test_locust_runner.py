"""The load-test gate end to end: real locust runs against real servers on loopback.

    .venv/bin/pytest tests/loadtests/test_locust_runner.py -q

One passing run against the micro model (torch backend) feeds the parser and report tests; a CLI
run with an impossible SLO must exit 1; a server that answers 500s and breaks its SSE streams must
breach the error-rate SLO with each breakage counted as a failure.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from llmops.errors import InputError
from llmops.report import Report
from loadtests.locust_runner import (
    DEFAULT_SLO,
    evaluate,
    parse_stats_csv,
    percentile,
    read_samples,
    run_loadtest,
)
from loadtests.slo import load_slo

pytestmark = pytest.mark.slow
GATED = ("p95_latency_ms", "ttft_p95_ms", "error_rate", "requests_per_s", "tokens_per_s")


def test_passing_run_measures_every_slo(passing_run):
    report, out = passing_run
    assert report.passed, report.to_dict()
    m = report.metrics
    assert m["requests"].head > 0 and m["failures"].head == 0 and m["error_rate"].head == 0
    for name in GATED:
        assert m[name].head is not None and m[name].head > 0 or name == "error_rate", name
        assert m[name].threshold is not None and m[name].passed is True, name
    # TTFT comes before the whole stream ends; tokens/s is 16 tokens over a sub-second request.
    assert 0 < m["ttft_p95_ms"].head <= m["stream_p95_latency_ms"].head
    assert m["tokens_per_s"].head > 1
    png = out / "latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    on_disk = Report.load(out / "report.json")
    assert on_disk.kind == "loadtest" and on_disk.verdict == "pass"
    assert (out / "report.md").read_text(encoding="utf-8").count("ttft_p95_ms") == 1
    assert not list(out.glob(".loadtest-*")), "the temporary work folder was left behind"


def test_stats_csv_parser_on_a_real_run(passing_run):
    _, out = passing_run
    rows = {(r.type, r.name): r for r in parse_stats_csv(out / "locust_stats.csv")}
    chat, stream = rows[("POST", "/v1/chat/completions")], rows[("POST", "/v1/chat/completions (stream)")]
    ttft, tps = rows[("TTFT", "/v1/chat/completions (stream)")], rows[("TPS", "/v1/chat/completions (stream)")]
    total = rows[("", "Aggregated")]
    assert chat.requests > 0 and stream.requests > 0 and chat.failures == stream.failures == 0
    assert total.requests == chat.requests + stream.requests + ttft.requests + tps.requests
    assert ttft.requests == stream.requests  # every stream of the micro model had a first token
    assert chat.percentiles["50%"] <= chat.percentiles["95%"] <= chat.percentiles["100%"]
    assert chat.rps > 0
    # The locustfile rewrites the CSV at exit, so it agrees with the per-request samples exactly.
    samples = read_samples(out / "samples.jsonl")
    assert sum(s["task"] == "chat" for s in samples) == chat.requests
    assert sum(s["task"] == "stream" for s in samples) == stream.requests


def test_csv_alone_gives_the_same_verdict(passing_run):
    """Without the samples file (a plain `locust --csv` run) the gate reads the TTFT/TPS rows."""
    report, out = passing_run
    from_csv = evaluate(load_slo(DEFAULT_SLO), parse_stats_csv(out / "locust_stats.csv"), samples=[])
    assert from_csv.info["ttft_tps_source"] == "csv" and from_csv.passed
    # Same quantity, different estimator: locust's histogram keeps 2 significant digits and takes a
    # nearest rank, the samples interpolate. With a few dozen samples and a long tail the two p95s can
    # be far apart (39 against 25 ms in one CI run), so the CSV's value is checked against the samples'
    # own order statistics: within [p90, max], widened by the rounding. Another row or column (p50,
    # the TPS row, the stream's whole latency) falls outside.
    samples = read_samples(out / "samples.jsonl")
    observed = {"p95_latency_ms": [s["latency_ms"] for s in samples if s["task"] == "chat" and s["ok"]],
                "ttft_p95_ms": [s["ttft_ms"] for s in samples if s.get("ttft_ms") is not None]}
    for name, values in observed.items():
        rounded = from_csv.metrics[name].head
        low, high = percentile(values, 90), max(values)
        assert low * 0.95 - 1 <= rounded <= high * 1.05 + 1, (name, rounded, low, high)
    exact, rounded = report.metrics["tokens_per_s"].head, from_csv.metrics["tokens_per_s"].head
    assert rounded == pytest.approx(exact, rel=0.5), "tokens_per_s"


def test_parser_rejects_what_is_not_a_locust_csv(tmp_path):
    bad = tmp_path / "x_stats.csv"
    bad.write_text("Type,Name,Request Count\nPOST,/,3\n", encoding="utf-8")
    with pytest.raises(InputError, match="not a locust stats CSV") as err:
        parse_stats_csv(bad)
    assert err.value.field == "Failure Count"
    with pytest.raises(InputError, match="cannot read"):
        parse_stats_csv(tmp_path / "missing.csv")
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"task": "chat", "ok": true}\n{oops\n', encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_samples(samples)
    assert err.value.line == 2


def test_percentile_matches_linear_interpolation():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10.0], 95) == 10.0 and percentile([], 95) is None
    assert percentile(list(range(101)), 95) == 95


def test_unmeasurable_numbers_fail_their_slo():
    report = evaluate(load_slo(DEFAULT_SLO), rows=[], samples=[])
    assert not report.passed
    assert all(report.metrics[n].passed is False for n in GATED)
    findings = {f.field for c in report.checks for f in c.findings}
    assert "slo.min_tokens_per_s" in findings and "slo.ttft_p95_ms" in findings


def test_impossible_slo_exits_1_and_names_the_breach(micro_model, tmp_path, capsys):
    from llmops.cli import main

    data = yaml.safe_load(DEFAULT_SLO.read_text(encoding="utf-8"))
    data["slo"]["min_requests_per_s"] = 1e9
    slo = tmp_path / "impossible.yaml"
    slo.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = tmp_path / "out"
    code = main(["loadtest", "--model", str(micro_model), "--backend", "torch", "--users", "2",
                 "--duration", "2s", "--slo", str(slo), "--out", str(out)])
    assert code == 1
    assert "requests_per_s" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["verdict"] == "fail" and report["kind"] == "loadtest"
    assert report["metrics"]["requests_per_s"]["passed"] is False
    assert report["metrics"]["requests_per_s"]["threshold"] == 1e9
    assert report["metrics"]["error_rate"]["passed"] is True  # the server was fine; only the SLO was not
    slo_check = next(c for c in report["checks"] if c["name"] == "slo")
    assert [f["field"] for f in slo_check["findings"]] == ["slo.min_requests_per_s"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "FAIL" in md and "slo.min_requests_per_s" in md


def test_500s_and_broken_streams_breach_the_error_rate(bad_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # a relative --out (`llmops bench guards`' default is one) works too
    report = run_loadtest(bad_server, DEFAULT_SLO, Path(tmp_path.name), users=2, duration=3)
    assert not report.passed
    m = report.metrics
    assert m["error_rate"].passed is False and m["error_rate"].head > 0.5
    # Every non-streaming request got a 500: no latency to gate, and failures are not throughput.
    assert m["p95_latency_ms"].head is None and m["p95_latency_ms"].passed is False
    assert m["requests_per_s"].head < m["requests"].head / 3
    with open(tmp_path / "locust_failures.csv", encoding="utf-8", newline="") as handle:
        errors = " ".join(row["Error"] for row in csv.DictReader(handle))
    assert "HTTP 500" in errors
    assert "without data: [DONE]" in errors
    assert "not JSON" in errors
    assert "in-band error" in errors
    # One stream in four is valid: it is counted as a success and timed.
    samples = read_samples(tmp_path / "samples.jsonl")
    good = [s for s in samples if s["task"] == "stream" and s["ok"]]
    bad = [s for s in samples if s["task"] == "stream" and not s["ok"]]
    assert good and len(bad) >= 2 * len(good) and all(s["ttft_ms"] is not None for s in good)


def test_malformed_eval_set_stops_locust_with_the_line(bad_server, tmp_path):
    eval_set = tmp_path / "eval.jsonl"
    eval_set.write_text('{"question": "ok?"}\n{"answer": "no question"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"eval\.jsonl:2 \[question\]"):
        run_loadtest(bad_server, DEFAULT_SLO, tmp_path / "out", users=1, duration=1, eval_set=eval_set)
    assert not (tmp_path / "out" / "report.json").exists()


def test_the_locustfile_runs_with_plain_locust(bad_server, tmp_path):
    """`locust -f loadtests/locustfile.py --host URL` with no env works and finds the repo's eval set."""
    import subprocess
    import sys

    from loadtests.locust_runner import LOCUSTFILE

    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", bad_server,
                           "--headless", "-u", "1", "-r", "1", "-t", "1s", "--only-summary"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "built-in questions" not in proc.stderr
    assert "/v1/chat/completions" in proc.stdout + proc.stderr
    assert proc.returncode == 1  # locust's own default: exit 1 when any request failed


def test_hard_timeout_kills_locust(bad_server, tmp_path, monkeypatch):
    import time

    import loadtests.locust_runner as runner

    # 1 s run + 0.25 s spawn + 5 s stop timeout + slack = a 0.5 s hard limit: locust cannot even start.
    monkeypatch.setattr(runner, "STARTUP_SLACK_S", 0.5 - (1 + 0.25 + runner.STOP_TIMEOUT_S))
    started = time.monotonic()
    with pytest.raises(InputError, match="hard timeout"):
        run_loadtest(bad_server, DEFAULT_SLO, tmp_path, users=1, duration=1)
    assert time.monotonic() - started < 10
    assert not (tmp_path / "report.json").exists()
