"""The one report schema: round trip, verdict, Markdown for the PR comment (marker, escaping, size cap)."""

from __future__ import annotations

import json
from pathlib import Path

from llmops.report import GITHUB_COMMENT_LIMIT, MARKER, Finding, Metric, Report, render_markdown


def failing_report(n_cases: int = 3) -> Report:
    rep = Report(kind="pr-gate")
    rep.add_check("data:faq:pii", [Finding("email address jane@… found", file="datasets/faq/train.jsonl", line=7,
                                           field="answer")])
    rep.add_check("prompt lint", [Finding("no examples", file="prompts/a.yaml", severity="warning")])
    rep.metrics["pass_rate.json"] = Metric(head=0.5, base=1.0, threshold=0.83, passed=False)
    rep.metrics["dataset.rouge_l"] = Metric(head=0.21, base=0.2, threshold=0.18, passed=True)
    rep.cases = [{"id": f"json-{i}", "passed": False, "prompt": "Q <script>alert(1)</script>", "output": "x" * 5000,
                  "assertions": [{"type": "is-json", "passed": False, "message": "not JSON | at char 0"}]}
                 for i in range(n_cases)]
    return rep


def test_verdict_follows_errors_not_warnings() -> None:
    rep = Report(kind="x")
    rep.add_check("lint", [Finding("style", severity="warning")])
    assert rep.passed
    rep.metrics["m"] = Metric(head=1.0, passed=None)  # reported, not gated
    assert rep.passed
    rep.metrics["n"] = Metric(head=0.1, base=0.5, threshold=0.4, passed=False)
    assert not rep.passed and rep.verdict == "fail"


def test_round_trip_and_files(tmp_path: Path) -> None:
    rep = failing_report()
    json_path, md_path = rep.write(tmp_path)
    data = json.loads(json_path.read_text())
    assert data["verdict"] == "fail" and data["schema"] == 1
    assert data["metrics"]["pass_rate.json"]["delta"] == -0.5
    assert data["checks"][0]["findings"][0] == {"message": "email address jane@… found",
                                                "file": "datasets/faq/train.jsonl", "line": 7, "field": "answer",
                                                "severity": "error"}
    again = Report.load(json_path)
    assert again.to_dict()["metrics"] == data["metrics"] and again.verdict == "fail"
    assert md_path.read_text() == render_markdown(again)


def test_markdown_marker_regressions_failures_and_escaping() -> None:
    md = render_markdown(failing_report())
    assert md.splitlines()[0] == MARKER
    assert "**FAIL**" in md.splitlines()[1]
    assert "| pass_rate.json | 1 | 0.5 | -0.5 | 0.83 | ❌ regression |" in md
    assert "#### `json-0`" in md and "`is-json`" in md
    assert "<script>" not in md and "&lt;script&gt;" in md  # model text cannot inject HTML into the comment
    assert "not JSON \\| at char 0" in md  # a pipe cannot break the table
    assert "datasets/faq/train.jsonl:7 [answer]" in md


def test_markdown_fits_githubs_comment_limit() -> None:
    md = render_markdown(failing_report(n_cases=400))
    assert len(md) <= GITHUB_COMMENT_LIMIT
    assert "truncated" in md.splitlines()[-1] and md.startswith(MARKER)
    assert len(render_markdown(failing_report(n_cases=400), limit=5000)) <= 5000
