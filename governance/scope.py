"""The scope check: a chat question about Python that holds no attack is answered, not refused.

    .venv/bin/python -m governance.train_scope          # trains governance/models/scope_head.json
    .venv/bin/python -m governance.train_scope --check  # rebuilds it in a temp dir and compares bytes

Why: the default model refuses some Python questions on its own ("Wie lese ich eine CSV-Datei mit
Python ein?", "mask credit card numbers in logs"), and no data mix tried kept its other skills
(training/RECIPES.md). Its refusal is a scope decision taken by 135M parameters. Two trained heads,
on the multilingual-e5-small embedding the input detector uses, take it instead when they are sure:

- the scope head (built by governance/train_scope.py from datasets/scope): P(python) of the last
  user message;
- the input detector (governance/classifier.py): the attack probability, the highest over every
  normalised variant of every message of the request, as the guards compute it anyway.

When P(python) >= the head's `threshold` and the attack probability < its `attack_ceiling`, the
answer may not open with the refusal (serving/guards.py sets SamplingParams.first_token_bans on the
refusal's first token). Nothing else changes: the input guards still block, the model may still
refuse later in its answer, and the output guards still check what it writes (canary, system prompt,
PII, markup). Either head unsure, and the model decides as before.

Both operating points are chosen on tuning data only (the held-out safety sets are measured, never
used to choose):
- `threshold`: the lowest P(python) at which at most 2.5% of datasets/scope's eval off-topic rows
  pass (governance.train_detector.operating_point, the detector's own rule);
- `attack_ceiling`: the attack probability under which 95% of datasets/safety-detector's benign eval
  rows fall (scored over their variants, as the guards score). A question with more attack signal
  than nearly every benign one keeps the model's refusal.

"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from governance.classifier import EMBEDDINGS, embed_for
from llmops.errors import InputError

HEAD = Path(__file__).parent / "models" / "scope_head.json"
LABELS = ("off_topic", "python")
SCHEMA = 1


@dataclass(frozen=True)
class ScopeHead:
    """P(python) = sigmoid(coef . x + intercept) of an embedding x; the two operating points."""

    coef: np.ndarray
    intercept: float
    threshold: float
    attack_ceiling: float
    embedding: str

    def p_python(self, vectors: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(vectors.astype(np.float64) @ self.coef + self.intercept)))


@dataclass(frozen=True)
class ScopeVerdict:
    """The scope check of one chat request."""

    p_python: float
    attack: float
    answer: bool
    """True: sure it is a Python question and not an attack, so the refusal may not open the answer."""

    def describe(self) -> str:
        return f"P(python) {self.p_python:.3f}, attack {self.attack:.3f}: {'answer' if self.answer else 'model decides'}"


def head_from_dict(data: dict, where: str = "scope head") -> ScopeHead:
    try:
        if data.get("schema") != SCHEMA or tuple(data["labels"]) != LABELS:
            raise InputError(f"schema {data.get('schema')!r} / labels {data.get('labels')!r}, expected {SCHEMA} / "
                             f"{list(LABELS)}", file=where, field="schema")
        head = ScopeHead(np.asarray(data["coef"], dtype=np.float64), float(data["intercept"]),
                         float(data["threshold"]), float(data["attack_ceiling"]), str(data["embedding"]["model"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"not a scope head: {exc!r}", file=where) from None
    for name in ("threshold", "attack_ceiling"):
        value = getattr(head, name)
        if not (math.isfinite(value) and 0.0 < value < 1.0):
            raise InputError(f"{name} {value} is not in (0, 1)", file=where, field=name)
    if head.embedding not in EMBEDDINGS or head.coef.ndim != 1:
        raise InputError(f"embedding {head.embedding!r}, coef shape {head.coef.shape}", file=where, field="coef")
    return head


@lru_cache(maxsize=2)
def load_head(path: str = str(HEAD)) -> ScopeHead:
    import json

    p = Path(path)
    try:
        return head_from_dict(json.loads(p.read_text(encoding="utf-8")), str(p))
    except OSError as exc:
        raise InputError(f"cannot read the scope head: {exc.strerror} (build it with `python -m governance.train_scope`)",
                         file=str(p)) from None
    except ValueError as exc:
        raise InputError(f"bad JSON: {exc}", file=str(p)) from None


def judge(question: str, attack: float, path: Path = HEAD) -> ScopeVerdict:
    """The scope verdict of a chat request whose last user message is `question` and whose highest
    attack probability (the input detector's, over every variant) is `attack`."""
    head = load_head(str(path))
    p = float(head.p_python(embed_for(head.embedding, [question]))[0])
    return ScopeVerdict(p, attack, p >= head.threshold and attack < head.attack_ceiling)
