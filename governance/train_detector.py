"""Train the classifier head of the input detector (governance/classifier.py) and report it like a model.

    .venv/bin/python -m governance.train_detector                    # writes governance/models/
    .venv/bin/python -m governance.train_detector --check            # rebuild in a temp dir, compare bytes
    .venv/bin/python -m governance.train_detector --embedding all-MiniLM-L6-v2 --out /tmp/minilm

Deterministic: the same dataset files and embedding model give the same artifact byte for byte
(embeddings are deterministic, scikit-learn's lbfgs is, the weights are rounded to 6 decimals and
written with fixed key order).

1. Reads datasets/safety-detector/{train,eval}.jsonl (row `question` = text, `answer` = label, tag
   `lang:xx`), after checking their sha256 against the dataset card.
2. Embeds every text with the chosen model, standardises the features on the train split, and
   picks the inverse regularisation C among C_GRID by grouped 5-fold cross-validation on train
   only (log loss; translations of one sentence stay in one fold).
3. Fits a multinomial logistic regression on the whole train split and folds the standardisation
   into the weights, so the artifact is one linear layer on the raw embedding.
4. On the eval split: the attack probability 1 - P(benign) of every row (its highest over the
   governance/normalise.py variants, as the guards scan it), precision and recall at every
   threshold (PR curve, JSON and PNG), and the operating point: the threshold with the highest
   recall among those with at most --max-false-alarm of the benign eval rows flagged. Per label and
   per language recall and false alarms at that point.

The false-alarm budget on the eval split is 2.5%, half the 5% that the guards must hold on real
traffic: the first head, built with a 5% budget on a corpus whose benign rows were nearly all
"How do I ...?" questions, flagged 10.7% of the held-out benign set (guards only). The corpus then
gained fragments, statements, instructions and off-topic requests, and the budget was halved for
the shift from the eval split to other traffic. Both moves used only this dataset; the held-out
sets were measured, never read or trained on.

Outputs in --out: injection_head.json (the artifact: weights, embedding model, threshold, sha256
of the training data), injection_head.report.json, injection_head.pr.json, injection_head.pr.png.
Exit codes: 0 written (or --check identical), 1 --check found a difference, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from governance.classifier import BENIGN, EMBEDDINGS, HEAD, LABELS, SCHEMA, embed_for, head_from_dict
from governance.normalise import variants
from llmops.dataset import load_card, read_jsonl
from llmops.errors import InputError
from llmops.files import atomic_write_text, sha256_file

DATASET = Path(__file__).resolve().parents[1] / "datasets" / "safety-detector"
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
DECIMALS = 6
ARTIFACT_NAME = HEAD.name
REPORT_NAME = "injection_head.report.json"
PR_JSON_NAME = "injection_head.pr.json"
PR_PNG_NAME = "injection_head.pr.png"


def load_split(dataset: Path, name: str) -> list[dict]:
    """Rows of one split as {id, text, label, lang, group}; InputError on a bad label or tag."""
    path = dataset / f"{name}.jsonl"
    rows = []
    for line, r in read_jsonl(path):
        label = r.get("answer") if isinstance(r, dict) else None
        if label not in LABELS:
            raise InputError(f"label {label!r} is not one of {', '.join(LABELS)}", file=str(path), line=line,
                             field="answer")
        tags = dict(t.split(":", 1) for t in r.get("tags", []) if ":" in t)
        if "lang" not in tags:
            raise InputError("no lang:<code> tag", file=str(path), line=line, field="tags")
        rows.append({"id": r["id"], "text": r["question"], "label": label, "lang": tags["lang"],
                     "group": tags.get("group", r["id"])})
    if not rows:
        raise InputError("no rows: nothing to train or measure on", file=str(path))
    return rows


def _verified_sha256(dataset: Path) -> dict[str, str]:
    """sha256 of train.jsonl and eval.jsonl, which must equal the dataset card's."""
    card = load_card(dataset)
    out = {}
    for name in ("train.jsonl", "eval.jsonl"):
        actual = sha256_file(dataset / name)
        entry = card.files.get(name)
        if entry is None or entry.sha256 != actual:
            raise InputError(f"sha256 {actual[:12]}… differs from the card's "
                             f"{entry.sha256[:12] + '…' if entry else '(not listed)'}: run `llmops data check`",
                             file=str(dataset / name), field="sha256")
        out[name] = actual
    return out


def _fit(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=2000, tol=1e-6).fit(x, y)


def choose_c(x: np.ndarray, y: np.ndarray, groups: list[str], n_labels: int = len(LABELS)) -> tuple[float, dict[str, float]]:
    """The C of C_GRID with the lowest grouped 5-fold cross-validated log loss on the train split
    (labels 0 .. n_labels - 1)."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import GroupKFold

    losses = {}
    for c in C_GRID:
        total = 0.0
        for fit_idx, test_idx in GroupKFold(n_splits=5).split(x, y, groups):
            model = _fit(x[fit_idx], y[fit_idx], c)
            total += log_loss(y[test_idx], model.predict_proba(x[test_idx]), labels=list(range(n_labels)),
                              normalize=False)
        losses[str(c)] = round(total / len(y), DECIMALS)
    best = min(C_GRID, key=lambda c: (losses[str(c)], c))
    return best, losses


def operating_point(scores: np.ndarray, is_attack: np.ndarray, max_false_alarm: float) -> dict:
    """The threshold with the highest recall whose benign false-alarm share is <= max_false_alarm
    (ties: the highest threshold), with its precision, recall and false-alarm rate."""
    n_benign, n_attack = int((~is_attack).sum()), int(is_attack.sum())
    if n_benign == 0 or n_attack == 0:
        raise InputError("the eval split needs both benign and attack rows to choose an operating point")
    best = None
    for t in sorted(set(scores.tolist()), reverse=True):
        flagged = scores >= t
        fa = int((flagged & ~is_attack).sum()) / n_benign
        if fa > max_false_alarm:
            break
        recall = int((flagged & is_attack).sum()) / n_attack
        if best is None or recall > best[1]:
            best = (t, recall)
    if best is None:
        raise InputError(f"no threshold keeps false alarms at or below {max_false_alarm}")
    threshold = math.floor(best[0] * 10**DECIMALS) / 10**DECIMALS
    return {"threshold": threshold, **_rates(scores >= threshold, is_attack)}


def _rates(flagged: np.ndarray, is_attack: np.ndarray) -> dict:
    tp = int((flagged & is_attack).sum())
    fp = int((flagged & ~is_attack).sum())
    n_attack, n_benign = int(is_attack.sum()), int((~is_attack).sum())
    return {"precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / n_attack, 4) if n_attack else None,
            "false_alarm_rate": round(fp / n_benign, 4) if n_benign else None,
            "attacks": n_attack, "attacks_flagged": tp, "benign": n_benign, "benign_flagged": fp}


def _breakdown(rows: list[dict], flagged: np.ndarray, key: str) -> dict:
    by: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by[r[key]].append(i)
    out = {}
    for value in sorted(by):
        idx = np.array(by[value])
        is_attack = np.array([rows[i]["label"] != BENIGN for i in idx])
        out[value] = _rates(flagged[idx], is_attack)
    return out


def train(dataset: Path = DATASET, embedding: str = "multilingual-e5-small",
          max_false_alarm: float = 0.025) -> tuple[dict, dict, dict]:
    """(artifact, report, pr curve) as JSON-ready dicts."""
    if embedding not in EMBEDDINGS:
        raise InputError(f"unknown embedding model {embedding!r}; known: {', '.join(EMBEDDINGS)}",
                         field="embedding")
    from threadpoolctl import threadpool_limits

    shas = _verified_sha256(dataset)
    train_rows, eval_rows = load_split(dataset, "train"), load_split(dataset, "eval")
    x_train = embed_for(embedding, [r["text"] for r in train_rows]).astype(np.float64)
    # Eval rows are scored as governance/detectors.py scores a request: every normalised variant
    # (decoded, quoted, windows), the row's score being its highest.
    forms = [[v.text for v in variants(r["text"])] for r in eval_rows]
    x_eval = embed_for(embedding, [t for f in forms for t in f]).astype(np.float64)
    with threadpool_limits(1):  # small problem: one BLAS thread is 20x faster here, and the same everywhere
        return _train(embedding, shas, train_rows, eval_rows, x_train, x_eval, [len(f) for f in forms],
                      max_false_alarm)


def _train(embedding: str, shas: dict, train_rows: list[dict], eval_rows: list[dict], x_train: np.ndarray,
           x_eval: np.ndarray, n_forms: list[int], max_false_alarm: float) -> tuple[dict, dict, dict]:
    from sklearn.metrics import precision_recall_curve

    y_train = np.array([LABELS.index(r["label"]) for r in train_rows])

    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    z_train = (x_train - mean) / std
    c, cv_losses = choose_c(z_train, y_train, [r["group"] for r in train_rows])
    model = _fit(z_train, y_train, c)
    coef = model.coef_ / std  # softmax(W (x - m) / s + b) = softmax((W / s) x + b - (W / s) m)
    intercept = model.intercept_ - coef @ mean
    artifact = {
        "schema": SCHEMA,
        "labels": list(LABELS),
        "embedding": {"model": embedding, "description": EMBEDDINGS[embedding]},
        "threshold": None,
        "score": "1 - P(benign); flagged at or above threshold",
        "training": {"dataset": "datasets/safety-detector", "sha256": shas,
                     "rows": {"train": len(train_rows), "eval": len(eval_rows)},
                     "model": "sklearn LogisticRegression (multinomial, lbfgs) on standardised features, "
                              "standardisation folded into the weights",
                     "C": c, "cv_log_loss": cv_losses, "max_false_alarm": max_false_alarm},
        "intercept": [round(float(v), DECIMALS) for v in intercept],
        "coef": [[round(float(v), DECIMALS) for v in row] for row in coef],
    }
    # Score the eval split with the rounded weights: what is measured is what is shipped.
    head = head_from_dict({**artifact, "threshold": 0.5})
    per_form = head.attack_scores(x_eval)
    scored, at = [], 0
    for n in n_forms:
        scored.append(max(per_form[at:at + n], key=lambda s: s[0]))
        at += n
    scores = np.array([s for s, _ in scored])
    is_attack = np.array([r["label"] != BENIGN for r in eval_rows])
    point = operating_point(scores, is_attack, max_false_alarm)
    artifact["threshold"] = point["threshold"]
    flagged = scores >= point["threshold"]

    precision, recall, thresholds = precision_recall_curve(is_attack.astype(int), scores)
    pr = {"split": "datasets/safety-detector/eval.jsonl", "positive": "any attack label (not benign)",
          "points": [{"threshold": round(float(t), DECIMALS), "precision": round(float(p), 4),
                      "recall": round(float(r), 4)} for p, r, t in zip(precision, recall, thresholds, strict=False)]}
    labels_pred = Counter()
    for (_, label), f, r in zip(scored, flagged, eval_rows, strict=True):
        if f and r["label"] != BENIGN:
            labels_pred[label == r["label"]] += 1
    report = {
        "artifact": ARTIFACT_NAME,
        "embedding": embedding,
        "eval_split": "datasets/safety-detector/eval.jsonl",
        "scoring": "a row's score is its highest over governance/normalise.py variants, as the guards scan it",
        "operating_point": point,
        "at_threshold_0.5": _rates(scores >= 0.5, is_attack),
        "per_label": _breakdown(eval_rows, flagged, "label"),
        "per_language": _breakdown(eval_rows, flagged, "lang"),
        "attack_label_correct_when_flagged": round(labels_pred[True] / max(1, sum(labels_pred.values())), 4),
        "missed": [r["id"] for r, f in zip(eval_rows, flagged, strict=True) if r["label"] != BENIGN and not f],
        "false_alarms": [r["id"] for r, f in zip(eval_rows, flagged, strict=True) if r["label"] == BENIGN and f],
        "C": c,
    }
    return artifact, report, pr


def _dump(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


def plot_pr(pr: dict, point: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.plot([p["recall"] for p in pr["points"]], [p["precision"] for p in pr["points"]], drawstyle="steps-post")
    ax.plot([point["recall"]], [point["precision"]], "o", color="C3",
            label=f"operating point t={point['threshold']:.3f}\nfalse alarms {point['false_alarm_rate']:.1%}")
    ax.set(xlabel="recall (attacks flagged)", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
           title="safety-detector eval split")
    ax.legend(loc="lower left")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)


def write(out: Path, artifact: dict, report: dict, pr: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / ARTIFACT_NAME, _dump(artifact))
    atomic_write_text(out / REPORT_NAME, _dump(report))
    atomic_write_text(out / PR_JSON_NAME, _dump(pr))
    plot_pr(pr, report["operating_point"], out / PR_PNG_NAME)


def build_or_check(build: Callable[[], tuple], committed: Path, check: bool,
                   write_parts: Callable[..., None]) -> tuple | int:
    """A trainer's command: `build()` (the artifact first); with `check`, the exit code of comparing it
    with `committed` (0 equal, 1 not); else `write_parts(*built)` and the built parts. Bad input: the
    message on stderr and exit code 2."""
    try:
        built = build()
        if check:
            return 0 if rebuilt_equals(built[0], committed) else 1
        write_parts(*built)
        return built
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def rebuilt_equals(artifact: dict, committed: Path) -> bool:
    """Whether `artifact`, written as the trainer writes it, equals the file `committed` byte for byte
    (`--check`); prints the verdict, and on a difference keeps the rebuild in the temp dir."""
    if not committed.is_file():
        raise InputError("no artifact to compare with", file=str(committed))
    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp) / committed.name
        atomic_write_text(new, _dump(artifact))
        same = sha256_file(new) == sha256_file(committed)
        if not same:
            shutil.copy(new, Path(tempfile.gettempdir()) / committed.name.replace(".json", ".rebuilt.json"))
    print(f"{committed}: {'reproduced byte for byte' if same else 'DIFFERS from the rebuild'} "
          f"(sha256 {sha256_file(committed)[:12]}…)")
    return same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m governance.train_detector", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--embedding", default="multilingual-e5-small", choices=sorted(EMBEDDINGS))
    parser.add_argument("--max-false-alarm", type=float, default=0.025,
                        help="Largest share of benign eval rows the operating point may flag (default 0.025: see the module doc).")
    parser.add_argument("--out", type=Path, default=HEAD.parent)
    parser.add_argument("--check", action="store_true",
                        help="Rebuild in a temporary folder and compare the artifact with the one in --out.")
    args = parser.parse_args(argv)
    built = build_or_check(lambda: train(args.dataset, args.embedding, args.max_false_alarm),
                           args.out / ARTIFACT_NAME, args.check, lambda *parts: write(args.out, *parts))
    if isinstance(built, int):
        return built
    _, report, _ = built
    point = report["operating_point"]
    print(f"{args.out / ARTIFACT_NAME}: {args.embedding}, C={report['C']}, threshold {point['threshold']}: "
          f"precision {point['precision']}, recall {point['recall']}, false alarms {point['false_alarm_rate']} "
          f"on the eval split ({point['attacks']} attacks, {point['benign']} benign)")
    for lang, r in report["per_language"].items():
        print(f"  {lang}: recall {r['recall']} ({r['attacks_flagged']}/{r['attacks']}), "
              f"false alarms {r['benign_flagged']}/{r['benign']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
