"""Reference-based metrics for the dataset eval split: ROUGE-L F, token F1 and exact match.

    .venv/bin/pytest tests/evals/test_metrics.py

Token F1 and exact match use SQuAD's answer normalisation (lowercase, drop punctuation and the
articles a/an/the, collapse whitespace), so "The GIL." and "gil" match exactly. ROUGE-L is the
F-measure of the longest common subsequence from Google's `rouge-score`, with Porter stemming
("lists" matches "list"). Every corpus score is the plain mean over rows, in [0, 1].
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower, strip punctuation, drop articles, collapse whitespace."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall over normalised tokens (bag of words)."""
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    if not pred or not ref:
        # SQuAD v2's rule: two empty answers agree, one empty answer scores 0.
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure with Porter stemming (rouge-score's tokeniser: lowercase alphanumerics)."""
    return _rouge_scorer().score(reference, prediction)["rougeL"].fmeasure


def corpus_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean rouge_l, token_f1 and exact_match over aligned (prediction, reference) pairs."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    n = len(predictions)
    pairs = list(zip(predictions, references, strict=True))
    return {
        "rouge_l": sum(rouge_l(p, r) for p, r in pairs) / n,
        "token_f1": sum(token_f1(p, r) for p, r in pairs) / n,
        "exact_match": sum(exact_match(p, r) for p, r in pairs) / n,
    }
