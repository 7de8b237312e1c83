"""Train the scope head (governance/scope.py) from datasets/scope, and choose its two operating points.

    .venv/bin/python -m governance.train_scope          # writes governance/models/scope_head.json
    .venv/bin/python -m governance.train_scope --check  # rebuilds it in a temp dir and compares bytes

1. Reads datasets/scope/{train,eval}.jsonl (row `question`, `answer` python or off_topic, tags
   `lang:xx` and `group:...`), after checking their sha256 against the dataset card.
2. Embeds them with multilingual-e5-small, standardises on train, picks C by grouped 5-fold
   cross-validation on train (governance.train_detector.choose_c), fits a logistic regression and
   folds the standardisation into the weights.
3. `threshold`: the lowest P(python) at which at most MAX_OFF_TOPIC (2.5%) of the eval split's
   off-topic rows pass (governance.train_detector.operating_point, the detector's own rule).
4. `attack_ceiling`: the attack probability under which BENIGN_QUANTILE (95%) of
   datasets/safety-detector's benign eval rows fall, each scored as the guards score it (its highest
   over governance/normalise.py variants).

Deterministic like the detector's head: same files and embedding, same artifact byte for byte.
Exit codes: 0 written (or --check identical), 1 --check found a difference, 2 bad input.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from governance.classifier import EMBEDDINGS, embed_for
from governance.classifier import classify as attack_scores
from governance.normalise import variants
from governance.scope import HEAD, LABELS, SCHEMA, head_from_dict
from governance.train_detector import DATASET as DETECTOR_DATASET
from governance.train_detector import (
    DECIMALS,
    _dump,
    _fit,
    _verified_sha256,
    build_or_check,
    choose_c,
    operating_point,
)
from llmops.dataset import read_jsonl
from llmops.errors import InputError
from llmops.files import atomic_write_text, sha256_file

DATASET = Path(__file__).resolve().parents[1] / "datasets" / "scope"
REPORT = HEAD.with_name("scope_head.report.json")
EMBEDDING = "multilingual-e5-small"
MAX_OFF_TOPIC = 0.025
BENIGN_QUANTILE = 95.0


def load_rows(dataset: Path, split: str) -> list[dict]:
    path = dataset / f"{split}.jsonl"
    rows = []
    for line, r in read_jsonl(path):
        if not isinstance(r, dict) or r.get("answer") not in LABELS or not isinstance(r.get("question"), str):
            raise InputError(f"a row needs a question and answer in {list(LABELS)}", file=str(path), line=line,
                             field="answer")
        tags = dict(t.split(":", 1) for t in r.get("tags", []) if ":" in t)
        rows.append({"id": r["id"], "text": r["question"], "label": r["answer"], "lang": tags.get("lang", "?"),
                     "group": tags.get("group", r["id"])})
    if not rows:
        raise InputError("no rows", file=str(path))
    return rows


def attack_ceiling(detector_dataset: Path = DETECTOR_DATASET) -> float:
    """The attack probability under which BENIGN_QUANTILE % of the detector corpus's benign eval rows fall."""
    rows = [r for _, r in read_jsonl(detector_dataset / "eval.jsonl") if r.get("answer") == "benign"]
    forms = [[v.text for v in variants(r["question"])] for r in rows]
    flat = attack_scores([t for f in forms for t in f])
    best, at = [], 0
    for f in forms:
        best.append(max(s for s, _ in flat[at:at + len(f)]))
        at += len(f)
    return math.floor(float(np.percentile(best, BENIGN_QUANTILE)) * 10**DECIMALS) / 10**DECIMALS


def train(dataset: Path = DATASET, detector_dataset: Path = DETECTOR_DATASET) -> tuple[dict, dict]:
    """(artifact, report) as JSON-ready dicts."""
    from threadpoolctl import threadpool_limits

    shas = {"datasets/scope": _verified_sha256(dataset),
            "datasets/safety-detector/eval.jsonl": sha256_file(detector_dataset / "eval.jsonl")}
    train_rows, eval_rows = load_rows(dataset, "train"), load_rows(dataset, "eval")
    x_train = embed_for(EMBEDDING, [r["text"] for r in train_rows]).astype(np.float64)
    x_eval = embed_for(EMBEDDING, [r["text"] for r in eval_rows]).astype(np.float64)
    y_train = np.array([LABELS.index(r["label"]) for r in train_rows])
    ceiling = attack_ceiling(detector_dataset)
    with threadpool_limits(1):
        mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
        z = (x_train - mean) / std
        c, cv_losses = choose_c(z, y_train, [r["group"] for r in train_rows], n_labels=len(LABELS))
        model = _fit(z, y_train, c)
    coef = model.coef_[0] / std
    intercept = float(model.intercept_[0] - coef @ mean)
    artifact = {
        "schema": SCHEMA, "labels": list(LABELS),
        "embedding": {"model": EMBEDDING, "description": EMBEDDINGS[EMBEDDING]},
        "threshold": 0.5, "attack_ceiling": ceiling,
        "score": "P(python); the refusal may not open the answer when P(python) >= threshold and the input "
                 "detector's attack probability < attack_ceiling",
        "training": {"sha256": shas, "rows": {"train": len(train_rows), "eval": len(eval_rows)},
                     "model": "sklearn LogisticRegression (lbfgs) on standardised features, standardisation folded in",
                     "C": c, "cv_log_loss": cv_losses, "max_off_topic": MAX_OFF_TOPIC,
                     "attack_ceiling": f"{BENIGN_QUANTILE:g}th percentile of the detector corpus's benign eval rows"},
        "intercept": round(intercept, DECIMALS),
        "coef": [round(float(v), DECIMALS) for v in coef],
    }
    head = head_from_dict(artifact)  # score with the rounded weights: what is measured is what is shipped
    scores = head.p_python(x_eval)
    is_python = np.array([r["label"] == "python" for r in eval_rows])
    point = operating_point(scores, is_python, MAX_OFF_TOPIC)
    artifact["threshold"] = point["threshold"]
    passed = scores >= point["threshold"]
    by_lang: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {"python": [], "off_topic": []})
    for r, ok in zip(eval_rows, passed, strict=True):
        by_lang[r["lang"]][r["label"]].append(bool(ok))
    report = {
        "artifact": HEAD.name, "eval_split": "datasets/scope/eval.jsonl",
        "operating_point": {"threshold": point["threshold"], "python_answered": point["recall"],
                            "off_topic_passed": point["false_alarm_rate"], "precision": point["precision"],
                            "python_rows": point["attacks"], "off_topic_rows": point["benign"]},
        "attack_ceiling": ceiling,
        "per_language": {lang: {k: f"{sum(v)}/{len(v)}" for k, v in d.items()} for lang, d in sorted(by_lang.items())},
        "python_missed": [r["id"] for r, ok in zip(eval_rows, passed, strict=True) if r["label"] == "python" and not ok],
        "off_topic_passed": [r["id"] for r, ok in zip(eval_rows, passed, strict=True) if r["label"] != "python" and ok],
        "C": c,
    }
    return artifact, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m governance.train_scope", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--out", type=Path, default=HEAD.parent)
    parser.add_argument("--check", action="store_true", help="Rebuild in a temp dir and compare with --out's artifact.")
    args = parser.parse_args(argv)

    def write(artifact: dict, report: dict) -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / HEAD.name, _dump(artifact))
        atomic_write_text(args.out / REPORT.name, _dump(report))

    built = build_or_check(lambda: train(args.dataset), args.out / HEAD.name, args.check, write)
    if isinstance(built, int):
        return built
    _, report = built
    point = report["operating_point"]
    print(f"{args.out / HEAD.name}: C={report['C']}, threshold {point['threshold']} (Python questions answered "
          f"{point['python_answered']}, off-topic passed {point['off_topic_passed']} on the eval split), "
          f"attack ceiling {report['attack_ceiling']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
