"""Deterministic DeepEval metrics (no judge, no network): ROUGE-1/2/L, BLEU, token F1, exact match,
Flesch reading ease and perplexity, each a deepeval `BaseMetric` with its threshold from evals/thresholds.yaml.

    .venv/bin/pytest tests/evals/test_deepeval_metrics.py

Each metric scores one `LLMTestCase` (actual_output against expected_output) and passes when
score >= threshold (perplexity: score <= threshold, lower is better). Scales: ROUGE, F1 and EM in
[0, 1]; BLEU in [0, 100] (sacrebleu's sentence BLEU with its default exp smoothing); Flesch
reading ease on its own scale (about 0-100, higher is easier; textstat). Perplexity is
exp(mean negative log-likelihood per reference-answer token given the prompt), computed with torch
from a model folder; `corpus_perplexity` pools the tokens of every row (token-weighted), which is
the number the eval split reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from deepeval.metrics import BaseMetric
from deepeval.test_case import LLMTestCase
from pydantic import BaseModel, ConfigDict, Field

from evals.metrics import exact_match, token_f1
from evals.rule_evals import DEFAULT_THRESHOLDS, load_thresholds
from llmops.errors import InputError

METRIC_VERSION = "1"  # part of every result's cache key: bump when a score's computation changes


class MetricGate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(description="Per-case pass mark (deepeval's threshold).")
    min_pass_rate: float | None = Field(None, ge=0, le=1, description="Gate on the share of passing cases.")


class PerplexityGate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max: float | None = Field(None, gt=0, description="Largest corpus perplexity allowed (null: reported only).")


class DeepEvalThresholds(BaseModel):
    """The `deepeval:` section of evals/thresholds.yaml (see the file for each number's meaning)."""

    model_config = ConfigDict(extra="forbid")
    rouge1: MetricGate = MetricGate(threshold=0.2)
    rouge2: MetricGate = MetricGate(threshold=0.05)
    rougeL: MetricGate = MetricGate(threshold=0.15)
    bleu: MetricGate = MetricGate(threshold=5.0)
    token_f1: MetricGate = MetricGate(threshold=0.2)
    exact_match: MetricGate = MetricGate(threshold=1.0)
    flesch: MetricGate = MetricGate(threshold=30.0)
    perplexity: PerplexityGate = PerplexityGate()
    correctness: MetricGate = MetricGate(threshold=0.5)
    answer_relevancy: MetricGate = MetricGate(threshold=0.5)
    faithfulness: MetricGate = MetricGate(threshold=0.5)
    repeat: int = Field(1, ge=1, description="Judge runs per case; the majority verdict counts.")


def load_deepeval_thresholds(path: Path | None = None) -> DeepEvalThresholds:
    """The `deepeval:` section of the thresholds file (evals/thresholds.yaml by default); unknown keys are errors."""
    from pydantic import ValidationError

    path = Path(path or DEFAULT_THRESHOLDS)
    try:
        return DeepEvalThresholds.model_validate(load_thresholds(path).deepeval or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(err["msg"], file=str(path),
                         field="deepeval." + ".".join(map(str, err["loc"]))) from None


# ---------------------------------------------------------------- score functions


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge(prediction: str, reference: str, variant: str) -> float:
    """ROUGE-1/2/L F-measure with Porter stemming."""
    return _rouge_scorer().score(reference, prediction)[variant].fmeasure


def bleu(prediction: str, reference: str) -> float:
    """sacrebleu sentence BLEU (13a tokenizer, exp smoothing), in [0, 100]."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(prediction, [reference]).score)


def flesch(text: str) -> float:
    """Flesch reading ease: 206.835 - 1.015 words/sentence - 84.6 syllables/word (textstat)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # textstat's pkg_resources deprecation notice
        import textstat

    return float(textstat.flesch_reading_ease(text)) if text.strip() else 0.0


# ---------------------------------------------------------------- deepeval metrics


class ScoreMetric(BaseMetric):
    """A deepeval metric from a score function `(actual_output, expected_output) -> float`."""

    needs_reference = True

    def __init__(self, name: str, score_fn: Callable[[str, str], float], threshold: float,
                 lower_is_better: bool = False) -> None:
        self.name, self.score_fn, self.threshold = name, score_fn, threshold
        self.lower_is_better = lower_is_better
        self.async_mode, self.strict_mode, self.include_reason = False, False, True
        self.evaluation_model = None  # deterministic: no judge

    def measure(self, test_case: LLMTestCase, *args: Any, **kwargs: Any) -> float:
        self.error = None
        actual = test_case.actual_output or ""
        if self.needs_reference and test_case.expected_output is None:
            self.error = f"{self.name} needs expected_output"
            self.score, self.success, self.reason = 0.0, False, self.error
            return self.score
        self.score = float(self.score_fn(actual, test_case.expected_output or ""))
        self.success = self.is_successful()
        sign = "<=" if self.lower_is_better else ">="
        self.reason = f"{self.name} = {self.score:.4g} (pass {sign} {self.threshold:g})"
        return self.score

    async def a_measure(self, test_case: LLMTestCase, *args: Any, **kwargs: Any) -> float:
        return self.measure(test_case)

    def is_successful(self) -> bool:
        if self.error is not None or self.score is None:
            self.success = False
        elif self.lower_is_better:
            self.success = self.score <= self.threshold
        else:
            self.success = self.score >= self.threshold
        return self.success

    @property
    def __name__(self) -> str:
        return self.name


class FleschMetric(ScoreMetric):
    needs_reference = False

    def __init__(self, threshold: float) -> None:
        super().__init__("flesch", lambda actual, _ref: flesch(actual), threshold)


class PerplexityMetric(ScoreMetric):
    """exp(mean NLL of expected_output's tokens given input) under a local model; lower is better."""

    def __init__(self, scorer: PerplexityScorer, threshold: float = float("inf")) -> None:
        self.scorer = scorer
        super().__init__("perplexity", lambda _a, _r: 0.0, threshold, lower_is_better=True)

    def measure(self, test_case: LLMTestCase, *args: Any, **kwargs: Any) -> float:
        self.error = None
        nll, tokens = self.scorer.nll(test_case.input, test_case.expected_output or "")
        self.score = math.exp(nll / tokens) if tokens else float("inf")
        self.success = self.is_successful()
        self.reason = f"perplexity = {self.score:.4g} over {tokens} answer tokens (pass <= {self.threshold:g})"
        return self.score


def deterministic_metrics(thresholds: DeepEvalThresholds) -> list[ScoreMetric]:
    """ROUGE-1/2/L, BLEU, token F1, exact match and Flesch, with their thresholds."""
    return [
        ScoreMetric("rouge1", lambda a, r: rouge(a, r, "rouge1"), thresholds.rouge1.threshold),
        ScoreMetric("rouge2", lambda a, r: rouge(a, r, "rouge2"), thresholds.rouge2.threshold),
        ScoreMetric("rougeL", lambda a, r: rouge(a, r, "rougeL"), thresholds.rougeL.threshold),
        ScoreMetric("bleu", bleu, thresholds.bleu.threshold),
        ScoreMetric("token_f1", token_f1, thresholds.token_f1.threshold),
        ScoreMetric("exact_match", exact_match, thresholds.exact_match.threshold),
        FleschMetric(thresholds.flesch.threshold),
    ]


# ---------------------------------------------------------------- perplexity


class PerplexityScorer:
    """A causal LM folder loaded once; `nll(prompt, answer)` sums -log p(answer tokens | prompt)."""

    def __init__(self, model_dir: Path, max_length: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        window = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_length = max_length or window

    def nll(self, prompt: str, answer: str) -> tuple[float, int]:
        """(summed NLL in nats, number of answer tokens scored). The prompt is cut from the left to fit."""
        torch = self.torch
        prompt_ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        answer_ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        answer_ids = answer_ids[: self.max_length - 1]
        prompt_ids = prompt_ids[-(self.max_length - len(answer_ids)):] if prompt_ids else []
        if not answer_ids or not prompt_ids:
            return 0.0, 0
        ids = torch.tensor([prompt_ids + answer_ids])
        with torch.no_grad():
            logits = self.model(ids).logits[0, :-1]  # (seq-1, vocab): position t predicts token t+1
        targets = ids[0, 1:]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        token_nll = -logprobs.gather(1, targets[:, None])[:, 0]
        return float(token_nll[len(prompt_ids) - 1:].sum()), len(answer_ids)


def corpus_perplexity(model_dir: Path, prompts: Sequence[str], answers: Sequence[str],
                      scorer: PerplexityScorer | None = None) -> tuple[float, int]:
    """(exp(total NLL / total answer tokens), total answer tokens) over aligned (prompt, answer) pairs."""
    scorer = scorer or PerplexityScorer(model_dir)
    total, tokens = 0.0, 0
    for prompt, answer in zip(prompts, answers, strict=True):
        nll, n = scorer.nll(prompt, answer)
        total, tokens = total + nll, tokens + n
    if not tokens:
        raise ValueError("no answer tokens to score")
    return math.exp(total / tokens), tokens
