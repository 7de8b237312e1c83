"""The DeepEval pytest suite: the eval split's answers from an OpenAI-compatible endpoint, asserted with deepeval.

    LLMOPS_EVAL_ENDPOINT=http://127.0.0.1:8000 deepeval test run evals/test_deepeval_suite.py
    LLMOPS_EVAL_ENDPOINT=http://127.0.0.1:8000 .venv/bin/pytest evals/test_deepeval_suite.py -q

Env: LLMOPS_EVAL_ENDPOINT (required, else every test skips with the reason), LLMOPS_EVAL_DATASET
(default datasets/python-faq), LLMOPS_EVAL_LIMIT (rows, default 10), LLMOPS_JUDGE_URL/MODEL/API_KEY
(the judged metrics; without them those tests skip: skipped, never passed). Thresholds come from
evals/thresholds.yaml's `deepeval:` section, as in `llmops deepeval-suite`. This file lives in evals/
(not tests/) because it evaluates a model, not the code: the unit test suite does not collect it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from evals.client import OpenAIClient
from evals.rule_evals import read_eval_rows
from llmops.prompts import load_all
from llmops.settings import Settings, apply_offline_env

apply_offline_env()

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = Settings.load(root=ROOT)
ENDPOINT = SETTINGS.eval_endpoint.strip()
DATASET = SETTINGS.eval_dataset or ROOT / "datasets" / "python-faq"
LIMIT = SETTINGS.eval_limit
pytestmark = pytest.mark.skipif(not ENDPOINT, reason="set LLMOPS_EVAL_ENDPOINT to the OpenAI-compatible endpoint to evaluate")


def _rows() -> list[dict]:
    if not ENDPOINT:
        return []
    return read_eval_rows(DATASET, LIMIT)


@cache
def _answer(question: str, context: str | None) -> str:
    prompt = load_all(ROOT / "prompts")["answer"]
    params = prompt.params
    with OpenAIClient(ENDPOINT, api_key=SETTINGS.secret("eval_api_key")) as client:
        client.resolve_model()
        text = prompt.render(client.chat_format, question=question, **({"context": context} if context else {}))
        return client.complete(text, **params.model_dump()).strip()


def _case(row: dict):
    from deepeval.test_case import LLMTestCase

    return LLMTestCase(input=row["question"], actual_output=_answer(row["question"], row.get("context")),
                       expected_output=row["answer"],
                       retrieval_context=[row["context"]] if row.get("context") else None)


ROWS = _rows()
IDS = [r["id"] for r in ROWS]


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_reference_metrics(row: dict) -> None:
    from deepeval import assert_test

    from evals.deepeval_metrics import deterministic_metrics, load_deepeval_thresholds

    assert_test(_case(row), deterministic_metrics(load_deepeval_thresholds()), run_async=False)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_judged_metrics(row: dict) -> None:
    from evals.deepeval_metrics import load_deepeval_thresholds
    from evals.judge import NO_JUDGE, judge_case, judge_from_settings, judged_metric_factories

    judge = judge_from_settings(SETTINGS)
    if judge is None:
        pytest.skip(NO_JUDGE)
    gates = load_deepeval_thresholds()
    case = _case(row)
    results = [judge_case(name, factory, case, gates.repeat)
               for name, factory in judged_metric_factories(judge, gates).items()]
    failed = [f"{r.name}: {r.status} (votes {r.votes}) {r.reason}" for r in results if r.status in ("failed", "error")]
    assert not failed, f"judge {judge.get_model_name()}: " + "; ".join(failed)
