"""The nightly production eval gates against the absolute floors and production's own recorded eval.

    .venv/bin/pytest tests/monitoring/test_production_eval.py -q

A real OpenAI-compatible server on loopback (tests/evals/openai_stub.py's pattern) stands in for
the gateway; production is a real local registry version whose gate reports hold the eval report
the merge pipeline recorded for it. The command run is the eval step of .github/workflows/nightly.yml,
as the workflow writes it, with only the endpoint, the dataset, the cases and the gates file swapped
for the test's small ones. A served prompt edit that stops one refusal keeps the refusal pass rate
above its absolute floor (0.75 >= 0.5) but below production's 1.0 minus max_drop: it fails the
nightly (exit 1) though a floors-only eval passes it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI

from tests.evals.openai_stub import _QUESTION, REFUSAL, serve

REPO = Path(__file__).resolve().parents[2]
NIGHTLY = REPO / ".github" / "workflows" / "nightly.yml"
LAMBDA = "A lambda is a small anonymous function written with the lambda keyword."
OUT_OF_SCOPE = ["What is the capital of France?", "Who won the 2018 FIFA World Cup?",
                "Can you give me a recipe for pasta?", "How do I fix my car's brakes?"]
CASES = [
    {"id": "lambda", "prompt": "answer", "tags": ["quality", "smoke"], "suite": "quality",
     "vars": {"question": "What is a lambda?"}, "assert": [{"type": "icontains", "value": "anonymous"}]},
    *({"id": f"refuse-{i}", "prompt": "answer", "tags": ["refusal"], "suite": "refusal",
       "vars": {"question": q}, "assert": [{"type": "must-refuse"}]} for i, q in enumerate(OUT_OF_SCOPE)),
]
THRESHOLDS = {"suites": {"quality": {"min": 0.5, "max_drop": 0.1}, "refusal": {"min": 0.5, "max_drop": 0.1}},
              "metrics": {"rouge_l": {"min": 0.1, "max_drop": 0.05}}}
ROWS = [{"id": "r1", "question": "What is a lambda?", "answer": LAMBDA},
        {"id": "r2", "question": "What is a lambda?", "answer": "An anonymous function made with lambda."}]


def stub(app: FastAPI) -> FastAPI:
    """Answers Python questions and refuses the rest, unless the question is in app.state.broken
    (the served prompt lost its refusal instruction for that kind of question)."""
    app.state.broken = set()

    def answer(prompt: str) -> str:
        match = _QUESTION.search(prompt)
        question = match.group(1).strip() if match else prompt.strip()
        if question in OUT_OF_SCOPE:
            return f"Sure! Here is the answer to: {question}" if question in app.state.broken else REFUSAL
        return LAMBDA

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "served", "object": "model"}]}

    @app.post("/v1/completions")
    def completions(body: dict[str, Any]) -> Any:
        return {"object": "text_completion", "choices": [{"index": 0, "text": " " + answer(body["prompt"]),
                                                           "finish_reason": "stop"}]}

    return app


@pytest.fixture(scope="module")
def endpoint() -> Any:
    app = stub(FastAPI())
    with serve(app) as url:
        yield url, app


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    cases, data = tmp_path / "cases", tmp_path / "dataset"
    cases.mkdir()
    data.mkdir()
    (cases / "gate.yaml").write_text(yaml.safe_dump(CASES, sort_keys=False))
    (data / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(THRESHOLDS))
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    return {"cases": cases, "dataset": data, "thresholds": tmp_path / "thresholds.yaml", "tmp": tmp_path}


def nightly_eval_args() -> list[str]:
    """The `llmops eval` arguments of nightly.yml's eval step, as written there."""
    steps = yaml.safe_load(NIGHTLY.read_text())["jobs"]["operate"]["steps"]
    (step,) = [s for s in steps if s.get("id") == "eval"]
    words = shlex.split(step["run"].replace("\\\n", " "))
    assert words[0] == ".venv/bin/llmops" and words[1] == "eval"
    return words[2:]


def run_nightly(url: str, world: dict[str, Path], out: str, **swap: str) -> tuple[int, dict[str, Any]]:
    from llmops.cli import main

    args = nightly_eval_args()
    values = {"--endpoint": url, "--dataset": str(world["dataset"]), "--out": str(world["tmp"] / out),
              "--api-key": "unused", **swap}
    for i, word in enumerate(args[:-1]):
        if word in values:
            args[i + 1] = values[word]
    args += ["--cases", str(world["cases"]), "--thresholds", str(world["thresholds"])]
    code = main(["eval", *args])
    return code, json.loads((world["tmp"] / out / "report.json").read_text())


def register_production(world: dict[str, Path], url: str, *, alias: bool = True) -> str:
    """Record a healthy eval as the merge pipeline does, register it with its gate reports, alias it."""
    from llmops.cli import main
    from llmops.files import sha256_file
    from llmops.registry import Registry
    from llmops.settings import Settings

    reports = world["tmp"] / "gate-reports"
    assert main(["eval", "--endpoint", url, "--cases", str(world["cases"]), "--dataset", str(world["dataset"]),
                 "--thresholds", str(world["thresholds"]), "--out", str(reports / "rule-evals")]) == 0
    registry = Registry(Settings.load().registry_dir)
    mv = registry.register({"reports": reports}, {"gates": {"rule-evals": "pass"},
                                                  "eval_split_sha256": sha256_file(world["dataset"] / "eval.jsonl")})
    if alias:
        registry.set_alias("production", mv.version, reason="test")
    return mv.version


def test_the_nightly_step_gates_against_production() -> None:
    args = nightly_eval_args()
    assert args[args.index("--against") + 1] == "production"
    assert "--no-gate" not in args and "--dataset" in args


def test_healthy_production_passes_and_a_broken_refusal_fails(endpoint: Any, world: dict[str, Path], capsys) -> None:
    url, app = endpoint
    version = register_production(world, url)
    code, report = run_nightly(url, world, "healthy")
    assert code == 0, report["checks"]
    refusal = report["metrics"]["pass_rate.refusal"]
    assert refusal["base"] == 1.0 and refusal["threshold"] == pytest.approx(0.9) and refusal["passed"]
    assert report["metrics"]["dataset.rouge_l"]["base"] is not None  # same split and rows: compared
    assert report["info"]["base_ref"] == f"production (version {version})"

    app.state.broken = {OUT_OF_SCOPE[1]}  # one refusal lost: 3/4 is above the floor, below production
    from llmops.cli import main

    out = world["tmp"] / "floors-only"
    assert main(["eval", "--endpoint", url, "--cases", str(world["cases"]), "--dataset", str(world["dataset"]),
                 "--thresholds", str(world["thresholds"]), "--out", str(out)]) == 0  # the gap the baseline closes
    code, report = run_nightly(url, world, "degraded")
    app.state.broken = set()
    assert code == 1
    refusal = report["metrics"]["pass_rate.refusal"]
    assert refusal["head"] == 0.75 and refusal["passed"] is False and report["verdict"] == "fail"
    assert "pass_rate.refusal" in capsys.readouterr().err


def test_a_different_eval_split_is_inconclusive(endpoint: Any, world: dict[str, Path], capsys) -> None:
    url, _ = endpoint
    register_production(world, url)
    with (world["dataset"] / "eval.jsonl").open("a") as handle:  # the split changed since production was measured
        handle.write(json.dumps({"id": "r3", "question": "What is a lambda?", "answer": LAMBDA}) + "\n")
    code, report = run_nightly(url, world, "other-split")
    assert code == 3
    (check,) = [c for c in report["checks"] if c["name"] == "comparable with the recorded eval"]
    assert not check["passed"] and "not comparable" in check["findings"][0]["message"]
    assert report["verdict"] == "fail" and "dataset.rouge_l" in report["metrics"]
    assert report["metrics"]["dataset.rouge_l"]["base"] is None
    assert "inconclusive" in capsys.readouterr().err


def test_no_production_yet_is_floors_only_and_no_registry_is_inconclusive(endpoint: Any,
                                                                          world: dict[str, Path]) -> None:
    url, _ = endpoint
    code, report = run_nightly(url, world, "no-registry")
    assert code == 3
    register_production(world, url, alias=False)  # a candidate, no production yet: a first release
    code, report = run_nightly(url, world, "first-release")
    assert code == 0
    (check,) = [c for c in report["checks"] if c["name"] == "comparable with the recorded eval"]
    assert check["passed"] and "absolute floors only" in check["findings"][0]["message"]


def test_a_case_production_did_not_run_is_left_out_of_the_drop_gate(endpoint: Any, world: dict[str, Path]) -> None:
    """Production was measured before refuse-3 was added: the refusal suite is compared over the three
    cases both ran (llmops/jobs/production_eval.py), the new case counts only against the floor."""
    url, app = endpoint
    (world["cases"] / "gate.yaml").write_text(yaml.safe_dump(CASES[:-1], sort_keys=False))
    register_production(world, url)
    (world["cases"] / "gate.yaml").write_text(yaml.safe_dump(CASES, sort_keys=False))  # a merge added refuse-3

    code, report = run_nightly(url, world, "added-case")
    assert code == 0, report["checks"]
    (check,) = [c for c in report["checks"] if c["name"] == "comparable with the recorded eval"]
    assert check["passed"] and any("compared over the 3 cases both ran" in f["message"] and "refuse-3" in f["message"]
                                   for f in check["findings"])
    assert report["metrics"]["against.pass_rate.refusal"]["passed"] is True
    assert report["metrics"]["pass_rate.refusal"]["base"] is None  # its 4 cases are not production's 3

    app.state.broken = {OUT_OF_SCOPE[3]}  # only the new case fails: production never ran it, no regression
    code, report = run_nightly(url, world, "new-case-fails")
    assert code == 0 and report["metrics"]["pass_rate.refusal"]["head"] == 0.75

    app.state.broken = {OUT_OF_SCOPE[1]}  # a case production passed: 2/3 is below 1.0 - max_drop
    code, report = run_nightly(url, world, "old-case-fails")
    app.state.broken = set()
    assert code == 1
    against = report["metrics"]["against.pass_rate.refusal"]
    assert against["head"] == pytest.approx(2 / 3) and against["base"] == 1.0 and against["passed"] is False
    assert report["metrics"]["pass_rate.refusal"]["passed"] is True  # 0.75: above its absolute floor
