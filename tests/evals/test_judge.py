"""The LLM judge over a real OpenAI-compatible judge server on loopback, and the skip path without one.

    .venv/bin/pytest tests/evals/test_judge.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
from deepeval.test_case import LLMTestCase

from evals.deepeval_metrics import DeepEvalThresholds
from evals.judge import NO_JUDGE, OpenAIJudge, judge_case, judge_from_settings, judged_metric_factories
from llmops.settings import Settings
from tests.evals.judge_stub import make_judge_app
from tests.evals.openai_stub import serve

CASE = LLMTestCase(input="What is a lambda?", actual_output="A lambda is an anonymous function.",
                   expected_output="An anonymous function.",
                   retrieval_context=["A lambda expression creates a small anonymous function."])


def run_all(url: str, repeat: int = 1) -> dict:
    judge = OpenAIJudge(url)
    return {name: judge_case(name, factory, CASE, repeat)
            for name, factory in judged_metric_factories(judge, DeepEvalThresholds()).items()}


def test_no_judge_configured_means_none() -> None:
    assert judge_from_settings(Settings(judge_url=None)) is None and judge_from_settings(Settings(judge_url="  ")) is None


def test_judge_from_settings_records_name_and_version() -> None:
    with serve(make_judge_app(model_id="big-judge", version="7b-2026-10")) as url:
        judge = judge_from_settings(Settings(judge_url=url))
        assert judge.info() == {"name": "big-judge", "version": "7b-2026-10", "endpoint": url}
        assert judge.get_model_name() == "big-judge (7b-2026-10)"


def test_favourable_judge_passes_every_metric_with_schema_requests() -> None:
    app = make_judge_app("good")
    with serve(app) as url:
        results = run_all(url)
    assert {n: r.status for n, r in results.items()} == {
        "correctness": "passed", "answer_relevancy": "passed", "faithfulness": "passed"}
    formats = [r.get("response_format") for r in app.state.requests]
    assert formats and all(f["type"] == "json_schema" and f["json_schema"]["schema"] for f in formats)
    assert all(r["temperature"] == 0.0 for r in app.state.requests)


def test_unfavourable_judge_fails_every_metric() -> None:
    with serve(make_judge_app("bad")) as url:
        results = run_all(url)
    assert {r.status for r in results.values()} == {"failed"}
    assert all(r.passed is False for r in results.values())


def test_majority_vote_over_repeats() -> None:
    with serve(make_judge_app("flip")) as url:
        judge = OpenAIJudge(url)
        factory = judged_metric_factories(judge, DeepEvalThresholds())["correctness"]
        three = judge_case("correctness", factory, CASE, repeat=3)  # good, bad, good
        two = judge_case("correctness", factory, CASE, repeat=2)    # bad, good: a tie fails
    assert three.votes == [True, False, True] and three.status == "passed"
    assert two.votes == [False, True] and two.status == "failed"


def test_faithfulness_without_context_is_skipped() -> None:
    with serve(make_judge_app("good")) as url:
        judge = OpenAIJudge(url)
        factory = judged_metric_factories(judge, DeepEvalThresholds())["faithfulness"]
        result = judge_case("faithfulness", factory, LLMTestCase(input="q", actual_output="a"), 1)
    assert result.status == "skipped" and result.passed is None


def test_runner_records_the_judge_in_the_report(stub_url: str, repo_root: Path) -> None:
    from evals.deepeval_runner import run_deepeval

    with serve(make_judge_app("good", model_id="stub-judge", version="v9")) as url:
        report = run_deepeval(stub_url, repo_root / "datasets" / "python-faq", repo_root / "prompts",
                              limit=2, judge=OpenAIJudge(url), repeat=3)
    assert report.info["judge"] == {"name": "stub-judge", "version": "v9", "endpoint": url, "repeat": 3}
    assert report.metrics["deepeval.correctness.pass_rate"].head == 1.0
    votes = [a["votes"] for c in report.cases for a in c["assertions"] if a["type"] == "correctness"]
    assert votes == [[True, True, True]] * 2
    assert NO_JUDGE not in str(report.to_dict())


def test_a_judge_answering_garbage_is_an_error_not_a_pass() -> None:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict:
        return {"data": [{"id": "broken"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict) -> dict:
        return {"choices": [{"message": {"content": "I think it is fine!"}}]}

    with serve(app) as url:
        results = run_all(url)
    assert {r.status for r in results.values()} == {"error"}
    assert all(r.passed is None for r in results.values())


@pytest.mark.parametrize("wrapped", ['```json\n{"a": 1}\n```', '{"a": 1}'])
def test_fenced_json_is_unwrapped(wrapped: str) -> None:
    from evals.judge import _strip_fences

    assert _strip_fences(wrapped).strip() == '{"a": 1}'
