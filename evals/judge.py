"""The LLM judge: a deepeval `DeepEvalBaseLLM` over any OpenAI-compatible chat endpoint, and the judged metrics.

    LLMOPS_JUDGE_URL=http://gpu-box:8001 LLMOPS_JUDGE_MODEL=qwen2.5-7b-instruct .venv/bin/pytest tests/evals/test_judge.py

`OpenAIJudge` sends deepeval's prompts to /v1/chat/completions at temperature 0. When deepeval asks
for a schema (every metric here does), the request carries OpenAI's
`response_format: {"type": "json_schema", ...}` with the pydantic model's JSON schema, and the
answer is validated against the model before deepeval sees it; servers that ignore
response_format still work when they answer with the JSON alone (deepeval's own fallback).

`judge_from_settings()` reads LLMOPS_JUDGE_URL, LLMOPS_JUDGE_MODEL and LLMOPS_JUDGE_API_KEY; with no URL
it returns None and every judged metric is SKIPPED: reported with status "skipped" and passed
None, never as passed. Judges drift, so the judge's name and version (what its /v1/models says)
go into every report, and `repeat` > 1 runs each judged metric that many times and keeps the
majority verdict (ties fail: a judge that cannot make up its mind does not pass a case).
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deepeval.models import DeepEvalBaseLLM

from evals.client import OpenAIClient
from llmops.errors import InputError
from llmops.settings import Settings

JUDGE_ENV = ("LLMOPS_JUDGE_URL", "LLMOPS_JUDGE_MODEL", "LLMOPS_JUDGE_API_KEY")
NO_JUDGE = "no judge configured (set LLMOPS_JUDGE_URL, and LLMOPS_JUDGE_MODEL if the server has several)"


class OpenAIJudge(DeepEvalBaseLLM):
    """A judge model behind an OpenAI-compatible /v1/chat/completions."""

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, *,
                 timeout: float = 120.0, max_tokens: int = 1024) -> None:
        self.client = OpenAIClient(base_url, api_key=api_key, model=model, timeout=timeout)
        self.max_tokens = max_tokens
        self.version: str | None = None
        super().__init__(model)  # calls load_model()

    def load_model(self) -> OpenAIJudge:
        """Ask the server which models it has: settles the model name and records its version."""
        try:
            data = self.client._request("GET", "/v1/models").get("data", [])
        except Exception:  # a server without /v1/models is fine when the model is named
            data = []
        if self.client.model is None:
            if not data:
                raise InputError("the judge endpoint lists no models; set LLMOPS_JUDGE_MODEL",
                                 field="LLMOPS_JUDGE_MODEL")
            self.client.model = data[0]["id"]
        card = next((m for m in data if m.get("id") == self.client.model), {})
        # OpenAI-compatible servers differ in what they expose; keep whatever identifies the weights.
        self.version = str(card.get("version") or card.get("created") or card.get("root") or "unknown")
        self.name = self.client.model
        return self

    def info(self) -> dict[str, Any]:
        """Name, version and endpoint of the judge, for the report."""
        return {"name": self.client.model, "version": self.version, "endpoint": self.client.base_url}

    def generate(self, prompt: str, schema: Any = None) -> Any:
        body: dict[str, Any] = {"model": self.client.model, "temperature": 0.0, "max_tokens": self.max_tokens,
                                "messages": [{"role": "user", "content": prompt}]}
        if schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": schema.__name__, "schema": schema.model_json_schema(), "strict": True}}
        data = self.client._request("POST", "/v1/chat/completions", body)
        try:
            text = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"judge answer has no choices[0].message.content: {str(data)[:200]}") from None
        if schema is None:
            return text
        return schema.model_validate(json.loads(_strip_fences(text)))

    async def a_generate(self, prompt: str, schema: Any = None) -> Any:
        # httpx.Client is thread-safe; a thread keeps deepeval's event loop free while the judge thinks.
        return await asyncio.to_thread(self.generate, prompt, schema)

    def get_model_name(self) -> str:
        return f"{self.client.model} ({self.version})"


def _strip_fences(text: str) -> str:
    """The JSON inside a ```json fence, for servers that wrap it despite response_format."""
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text


def judge_from_settings(settings: Settings) -> OpenAIJudge | None:
    """The judge configured by LLMOPS_JUDGE_URL/MODEL/API_KEY (`Settings.judge_*`), or None when no
    URL is set."""
    url = (settings.judge_url or "").strip()
    if not url:
        return None
    return OpenAIJudge(url, settings.judge_model or None, settings.secret("judge_api_key"))


# ---------------------------------------------------------------- judged metrics


def judged_metric_factories(judge: OpenAIJudge, thresholds: Any) -> dict[str, Callable[[], Any]]:
    """name -> a function building a fresh metric (a repeat must not reuse a metric's state)."""
    from deepeval.metrics import AnswerRelevancyMetric, FaithfulnessMetric, GEval
    from deepeval.test_case import SingleTurnParams

    return {
        "correctness": lambda: GEval(
            name="correctness", model=judge, threshold=thresholds.correctness.threshold, async_mode=False,
            criteria="Is the actual output factually correct and complete compared with the expected output? "
                     "Penalise contradictions and missing key facts; do not penalise wording.",
            evaluation_params=[SingleTurnParams.INPUT, SingleTurnParams.ACTUAL_OUTPUT,
                               SingleTurnParams.EXPECTED_OUTPUT]),
        "answer_relevancy": lambda: AnswerRelevancyMetric(
            model=judge, threshold=thresholds.answer_relevancy.threshold, async_mode=False),
        "faithfulness": lambda: FaithfulnessMetric(
            model=judge, threshold=thresholds.faithfulness.threshold, async_mode=False),
    }


@dataclass
class JudgedResult:
    """One judged metric on one case: "passed"/"failed" by majority of `repeat` runs, "skipped" or "error"."""

    name: str
    status: str
    score: float | None = None
    votes: list[bool] = field(default_factory=list)
    reason: str = ""

    @property
    def passed(self) -> bool | None:
        return None if self.status in ("skipped", "error") else self.status == "passed"


def skipped(name: str, reason: str = NO_JUDGE) -> JudgedResult:
    return JudgedResult(name=name, status="skipped", reason=reason)


def judge_case(name: str, factory: Callable[[], Any], test_case: Any, repeat: int = 1) -> JudgedResult:
    """Run a judged metric `repeat` times; majority vote of successes (strictly more than half), median score."""
    if name == "faithfulness" and not test_case.retrieval_context:
        return skipped(name, "the case has no retrieval_context to be faithful to")
    votes, scores, reasons = [], [], []
    for _ in range(repeat):
        metric = factory()
        try:
            metric.measure(test_case)
        except Exception as exc:  # a judge that answers nonsense is an error, not a pass
            return JudgedResult(name=name, status="error", votes=votes, reason=f"{type(exc).__name__}: {exc}"[:300])
        votes.append(bool(metric.is_successful()))
        scores.append(float(metric.score))
        reasons.append(str(metric.reason or ""))
    passed = sum(votes) * 2 > len(votes)
    return JudgedResult(name=name, status="passed" if passed else "failed", score=statistics.median(scores),
                        votes=votes, reason=reasons[-1][:300])
