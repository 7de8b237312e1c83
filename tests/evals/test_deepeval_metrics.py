"""Deterministic DeepEval metrics, perplexity, the thresholds section, and the suite runner over HTTP.

    .venv/bin/pytest tests/evals/test_deepeval_metrics.py -q
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from deepeval.test_case import LLMTestCase

from evals.deepeval_metrics import (
    DeepEvalThresholds,
    FleschMetric,
    PerplexityMetric,
    PerplexityScorer,
    ScoreMetric,
    bleu,
    corpus_perplexity,
    deterministic_metrics,
    flesch,
    load_deepeval_thresholds,
    rouge,
)
from llmops.errors import InputError

REF = "A lambda is a small anonymous function written with the lambda keyword."


def case(actual: str, expected: str | None = REF) -> LLMTestCase:
    return LLMTestCase(input="What is a lambda?", actual_output=actual, expected_output=expected)


def test_scores_on_known_pairs() -> None:
    assert rouge(REF, REF, "rouge1") == rouge(REF, REF, "rouge2") == rouge(REF, REF, "rougeL") == 1.0
    assert rouge("functions are lambdas", REF, "rouge2") == 0.0
    assert 0 < rouge("an anonymous function", REF, "rouge1") < 1
    assert bleu(REF, REF) == pytest.approx(100.0)
    assert bleu("Paris is in France.", REF) < 10
    # Short words and sentences read easily; long polysyllabic ones do not.
    assert flesch("The cat sat. It was fun.") > 90 > 0 > flesch(
        "Incomprehensibility characterises institutionalised internationalisation methodologies.")


def test_every_metric_passes_a_perfect_answer_and_fails_a_wrong_one() -> None:
    good = {m.name: m for m in deterministic_metrics(DeepEvalThresholds())}
    for name, metric in good.items():
        metric.measure(case(REF))
        assert metric.is_successful(), (name, metric.score, metric.reason)
    for metric in deterministic_metrics(DeepEvalThresholds()):
        if metric.name == "flesch":
            continue  # readability does not look at the reference
        metric.measure(case("Paris, capital city of France."))
        assert metric.is_successful() is False, (metric.name, metric.score)


def test_flesch_metric_fails_unreadable_text() -> None:
    metric = FleschMetric(threshold=30)
    metric.measure(case("Incomprehensibility characterises institutionalised internationalisation methodologies."))
    assert metric.is_successful() is False and "flesch" in metric.reason


def test_missing_reference_is_an_error_not_a_pass() -> None:
    metric = ScoreMetric("rouge1", lambda a, r: 1.0, 0.0)
    metric.measure(case("anything", expected=None))
    assert metric.is_successful() is False and metric.error


def test_assert_test_raises_on_a_failing_metric() -> None:
    from deepeval import assert_test

    assert_test(case(REF), deterministic_metrics(DeepEvalThresholds()), run_async=False)
    with pytest.raises(AssertionError, match="rouge1"):
        assert_test(case("Paris."), deterministic_metrics(DeepEvalThresholds())[:1], run_async=False)


def test_thresholds_section_loads_and_rejects_unknown_keys(tmp_path: Path, repo_root: Path) -> None:
    gates = load_deepeval_thresholds(repo_root / "evals" / "thresholds.yaml")
    assert gates.rouge1.threshold == 0.2 and gates.repeat == 1
    bad = tmp_path / "t.yaml"
    bad.write_text("deepeval:\n  rouge9: {threshold: 1}\n")
    with pytest.raises(InputError, match="rouge9"):
        load_deepeval_thresholds(bad)


def test_perplexity_prefers_text_like_the_training_text(micro_model: Path) -> None:
    scorer = PerplexityScorer(micro_model)
    prompt = "Answer: "
    natural, _ = corpus_perplexity(micro_model, [prompt], ["The function returns a list of the values."], scorer)
    noise, _ = corpus_perplexity(micro_model, [prompt], ["qzx vvk jjw pqq xxz kkq zzv wqx jjq"], scorer)
    assert 1 < natural < noise < math.inf
    metric = PerplexityMetric(scorer, threshold=natural + 1)
    metric.measure(LLMTestCase(input=prompt, actual_output="-", expected_output="The function returns a list of the values."))
    assert metric.is_successful() and metric.score == pytest.approx(natural, rel=1e-4)
    metric.measure(LLMTestCase(input=prompt, actual_output="-", expected_output="qzx vvk jjw pqq xxz kkq zzv wqx jjq"))
    assert metric.is_successful() is False


def test_run_deepeval_reports_metrics_and_skips_the_judge(stub_url: str, repo_root: Path, micro_model: Path) -> None:
    from evals.deepeval_runner import run_deepeval

    report = run_deepeval(stub_url, repo_root / "datasets" / "python-faq", repo_root / "prompts", micro_model, limit=3)
    m = report.metrics
    assert report.kind == "deepeval" and len(report.cases) == 3
    assert 0 <= m["deepeval.rougeL.mean"].head < 0.2  # the stub answers "I do not know." to FAQ questions
    assert m["deepeval.perplexity"].head > 1 and m["deepeval.perplexity"].higher_is_better is False
    for name in ("correctness", "answer_relevancy", "faithfulness"):
        assert m[f"deepeval.{name}.pass_rate"].head is None and m[f"deepeval.{name}.pass_rate"].passed is None
        assert all(a["passed"] is None and a["status"] == "skipped"
                   for c in report.cases for a in c["assertions"] if a["type"] == name)
    assert report.info["judge"]["status"] == "skipped"
    assert any("SKIPPED" in c.name for c in report.checks)


def test_pytest_suite_runs_against_an_endpoint(stub_url: str, repo_root: Path) -> None:
    """evals/test_deepeval_suite.py: reference metrics fail on the stub's wrong answers, judged tests skip."""
    env = {**os.environ, "LLMOPS_EVAL_ENDPOINT": stub_url, "LLMOPS_EVAL_LIMIT": "2"}
    env.pop("LLMOPS_JUDGE_URL", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                           "evals/test_deepeval_suite.py"], cwd=repo_root, env=env, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "2 failed" in out and "2 skipped" in out and "no judge configured" in out
