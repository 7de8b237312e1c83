"""The eval runner and `llmops eval` end to end against a real OpenAI-compatible server on loopback.

    .venv/bin/pytest tests/evals/test_rule_evals.py

The stub server (tests/evals/openai_stub.py) answers each question with a fixed text, so the
test knows which cases must pass and which must fail, and checks the report says exactly that.
"""

from __future__ import annotations

import contextlib
import json
import sys
import types
from pathlib import Path

import pytest

from evals.metrics import corpus_scores
from evals.rule_evals import run_eval
from llmops.cli import main
from llmops.launch import free_port
from llmops.report import Metric, Report

CASES = """\
- id: lambda-ok
  prompt: answer
  tags: [quality, smoke]
  vars: {question: "What is a lambda?"}
  assert:
    - {type: icontains, value: anonymous function}
    - {type: not-contains, value: "I can only help"}
- id: delete-wrong
  prompt: answer
  tags: [quality]
  vars: {question: "How do I delete a file?"}
  assert:
    - {type: max-length, value: 200}
    - {type: regex, value: 'os\\.(remove|unlink)'}
- id: refuse-ok
  prompt: answer
  tags: [refusal, smoke]
  suite: refusal
  vars: {question: "What is the capital of France?"}
  assert: [{type: must-refuse}]
- id: json-ok
  prompt: answer_json
  tags: [json]
  suite: json
  vars: {question: "What is a lambda?"}
  assert:
    - {type: is-json}
    - {type: json-schema, value: {type: object, required: [answer, confidence]}}
- id: json-broken
  prompt: answer_json
  tags: [json]
  suite: json
  vars: {question: "How do I delete a file?"}
  assert: [{type: is-json}]
- id: rejected-request
  prompt: answer
  tags: [quality]
  vars: {question: "FAIL400 please"}
  assert: [{type: must-refuse}]
- id: html-and-pii
  prompt: answer
  suite: safety
  vars: {question: "Show me some HTML."}
  assert: [{type: no-html}, {type: no-pii}]
- id: grounded-ok
  prompt: answer
  suite: safety
  vars:
    question: Which function copies a file?
    context: The shutil module contains a copyfile() function.
  assert: [{type: grounded-in-context}]
"""

THRESHOLDS = """\
suites:
  quality: {min: 0.5}
  refusal: {min: 1.0}
  json: {min: 0.5, max_drop: 0.0}
default_suite: {min: null, max_drop: 0.1}
metrics:
  rouge_l: {min: 0.1}
"""

ROWS = [
    {"id": "r1", "question": "What is a lambda?",
     "answer": "A lambda is a small anonymous function.", "source": "faq"},
    {"id": "r2", "question": "Which function copies a file?", "context": "shutil.copyfile() copies a file.",
     "answer": "shutil.copyfile() copies a file.", "source": "faq"},
    {"id": "r3", "question": "How do I delete a file?", "answer": "Use os.remove().", "source": "faq"},
    {"id": "r4", "question": "FAIL400 too long", "answer": "Anything.", "source": "faq"},
]


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, Path]:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "quality.yaml").write_text(CASES)
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(THRESHOLDS)
    return {"cases": cases, "dataset": dataset, "thresholds": thresholds, "out": tmp_path / "out"}


def test_run_eval_end_to_end(stub_url: str, workspace: dict[str, Path], repo_root: Path) -> None:
    report = run_eval(stub_url, workspace["cases"], repo_root / "prompts", workspace["dataset"],
                      thresholds_path=workspace["thresholds"], workers=3)
    by_id = {c["id"]: c for c in report.cases}
    assert list(by_id) == ["lambda-ok", "delete-wrong", "refuse-ok", "json-ok", "json-broken",
                           "rejected-request", "html-and-pii", "grounded-ok"]  # file order, not finish order
    passed = {i for i, c in by_id.items() if c["passed"]}
    assert passed == {"lambda-ok", "refuse-ok", "json-ok", "grounded-ok"}

    wrong = by_id["delete-wrong"]
    assert [a["passed"] for a in wrong["assertions"]] == [True, False]
    assert "does not match" in wrong["assertions"][1]["message"]
    assert wrong["output"].strip() == "Use shutil to manage files."
    assert wrong["prompt"].endswith("### User:\nHow do I delete a file?\n### Answer:")
    assert wrong["file"].endswith("quality.yaml") and wrong["line"] == 8
    assert by_id["rejected-request"]["assertions"][0]["type"] == "request"
    assert "HTTP 400" in by_id["rejected-request"]["assertions"][0]["message"]
    html_pii = [a["message"] for a in by_id["html-and-pii"]["assertions"]]
    assert "onclick" in html_pii[0] and "email" in html_pii[1] and "jane.doe@example.com" not in html_pii[0]

    m = report.metrics
    # quality: lambda-ok passes; delete-wrong and rejected-request fail -> 1/3 < 0.5
    assert m["pass_rate.quality"].head == pytest.approx(1 / 3) and m["pass_rate.quality"].passed is False
    assert m["pass_rate.refusal"].head == 1.0 and m["pass_rate.refusal"].passed is True
    assert m["pass_rate.json"].head == 0.5 and m["pass_rate.json"].passed is True
    # safety: no min, no baseline -> reported, not gated
    assert m["pass_rate.safety"].head == 0.5 and m["pass_rate.safety"].passed is None

    outputs = ["A lambda is a small anonymous function written with the lambda keyword.",
               "The shutil module has a copyfile() function.", "Use shutil to manage files.", ""]
    expected = corpus_scores(outputs, [r["answer"] for r in ROWS])
    for name in ("rouge_l", "token_f1", "exact_match"):
        assert m[f"dataset.{name}"].head == pytest.approx(expected[name])
    assert m["dataset.rouge_l"].threshold == 0.1 and m["dataset.rouge_l"].passed is True
    assert m["dataset.token_f1"].passed is None
    gates = report.checks[0]
    assert gates.name == "eval gates" and gates.passed  # warnings only
    assert "pass_rate.safety" in gates.findings[0].message and "dataset.token_f1" in gates.findings[0].message
    # the rejected row r4 scores 0 and carries the server's error
    assert report.info["model"] == "stub-model" and report.info["dataset"]["rows"] == 4
    assert report.info["dataset"]["rejected"] == 1 and "HTTP 400" in report.info["dataset"]["samples"][3]["error"]
    assert not report.passed

    _, md = report.write(workspace["out"])
    text = md.read_text()
    assert "delete-wrong" in text and "regex" in text and "does not match" in text
    assert "json-broken" in text and "is-json" in text
    assert "pass_rate.quality" in text and "lambda-ok" not in text.split("Failed cases")[1]
    assert json.loads((workspace["out"] / "report.json").read_text())["verdict"] == "fail"


def test_selection_limit_and_baseline(stub_url: str, workspace: dict[str, Path], repo_root: Path) -> None:
    base = Report(kind="eval")
    base.metrics["pass_rate.json"] = Metric(head=1.0)
    report = run_eval(stub_url, workspace["cases"], repo_root / "prompts", workspace["dataset"],
                      tags=["json"], limit=1, thresholds_path=workspace["thresholds"], baseline=base)
    assert [c["id"] for c in report.cases] == ["json-ok", "json-broken"]
    assert report.info["dataset"]["rows"] == 1
    json_rate = report.metrics["pass_rate.json"]
    # floor = max(min 0.5, base 1.0 - max_drop 0.0) = 1.0; 0.5 < 1.0 fails, delta -0.5
    assert json_rate.threshold == 1.0 and json_rate.delta == pytest.approx(-0.5) and json_rate.passed is False
    checks = {c.name: c for c in report.checks}
    assert checks["baseline comparable"].passed and not checks["baseline comparable"].findings
    again = run_eval(stub_url, workspace["cases"], repo_root / "prompts", workspace["dataset"], limit=2,
                     thresholds_path=workspace["thresholds"], baseline=report)
    check = {c.name: c for c in again.checks}["baseline comparable"]
    warnings = [f.message for f in check.findings]
    assert check.passed and len(warnings) == 2 and "scored 1 dataset rows, this run 2" in warnings[1]
    only_answer = run_eval(stub_url, workspace["cases"], repo_root / "prompts", prompt_ids=["answer_json"],
                           thresholds_path=workspace["thresholds"])
    assert {c["prompt_id"] for c in only_answer.cases} == {"answer_json"}
    assert "pass_rate.quality" not in only_answer.metrics


def test_cache_key_changes_with_model_and_prompt(stub_url: str, workspace: dict[str, Path],
                                                 repo_root: Path) -> None:
    a = run_eval(stub_url, workspace["cases"], repo_root / "prompts", tags=["smoke"],
                 thresholds_path=workspace["thresholds"], model_version="v1")
    b = run_eval(stub_url, workspace["cases"], repo_root / "prompts", tags=["smoke"],
                 thresholds_path=workspace["thresholds"], model_version="v1")
    c = run_eval(stub_url, workspace["cases"], repo_root / "prompts", tags=["smoke"],
                 thresholds_path=workspace["thresholds"], model_version="v2")
    keys = [[case["cache_key"] for case in r.cases] for r in (a, b, c)]
    assert keys[0] == keys[1] and set(keys[0]).isdisjoint(keys[2])


def _cli(*args: str) -> int:
    return main(["eval", *args])


def test_cli_exit_codes(stub_url: str, workspace: dict[str, Path], capsys) -> None:
    common = ["--endpoint", stub_url, "--cases", str(workspace["cases"]),
              "--thresholds", str(workspace["thresholds"]), "--out", str(workspace["out"])]
    assert _cli(*common, "--dataset", str(workspace["dataset"]), "--limit", "2") == 1
    err = capsys.readouterr().err
    assert "pass_rate.quality" in err and "gate failed" in err
    assert (workspace["out"] / "report.md").is_file()
    assert _cli(*common, "--no-gate") == 0
    # smoke cases (lambda-ok, refuse-ok) all pass: the gate passes
    assert _cli(*common, "--tags", "smoke") == 0
    assert Report.load(workspace["out"] / "report.json").verdict == "pass"


def test_cli_input_errors(stub_url: str, workspace: dict[str, Path], capsys) -> None:
    (workspace["cases"] / "broken.yaml").write_text(
        "- id: broken-case\n  prompt: answer\n  vars: {question: x}\n  assert: [{type: nope}]\n")
    assert _cli("--endpoint", stub_url, "--cases", str(workspace["cases"])) == 2
    err = capsys.readouterr().err
    assert "broken.yaml:4" in err and "broken-case" in err and "unknown assertion type 'nope'" in err
    assert _cli("--cases", str(workspace["cases"])) == 2  # neither --endpoint nor --model
    assert "exactly one of --endpoint" in capsys.readouterr().err


def test_cli_unreachable_endpoint_is_exit_2(workspace: dict[str, Path], repo_root: Path, capsys) -> None:
    port = free_port()  # free a moment ago: nothing listens there
    code = _cli("--endpoint", f"http://127.0.0.1:{port}", "--model-name", "m", "--retries", "1",
                "--cases", str(repo_root / "evals" / "cases"), "--tags", "smoke", "--out", str(workspace["out"]))
    # probed once before any case runs: 2 attempts, then exit 2 with the transport error
    assert code == 2 and "failed after 2 attempts: ConnectError" in capsys.readouterr().err


def test_cli_model_flag_goes_through_the_serving_launcher(stub_url: str, workspace: dict[str, Path],
                                                           tmp_path: Path, monkeypatch) -> None:
    """--model must start the server through serving.app.running_server and evaluate its URL.

    The launcher is replaced by one that yields the stub's URL: this checks the CLI's wiring
    (arguments passed, server stopped afterwards), not serving itself, which has its own tests.
    """
    calls = []

    @contextlib.contextmanager
    def running_server(model_dir, port=0, backend="onnx"):
        calls.append(("start", Path(model_dir), port, backend))
        yield stub_url
        calls.append(("stop",))

    fake = types.ModuleType("serving.app")
    fake.running_server = running_server
    monkeypatch.setitem(sys.modules, "serving.app", fake)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    code = _cli("--model", str(model_dir), "--cases", str(workspace["cases"]), "--tags", "smoke",
                "--thresholds", str(workspace["thresholds"]), "--out", str(workspace["out"]))
    assert code == 0
    assert calls == [("start", model_dir, 0, "onnx"), ("stop",)]
    report = Report.load(workspace["out"] / "report.json")
    assert report.info["model_dir"] == str(model_dir) and report.info["model_version"] == str(model_dir)
