"""The DeepEval suite of the merge pipeline: the eval split through an endpoint, scored with deepeval metrics.

    llmops deepeval-suite --endpoint http://127.0.0.1:8000 --dataset datasets/python-faq --limit 20
    LLMOPS_JUDGE_URL=http://127.0.0.1:8001 llmops deepeval-suite --model exports/v1 --ppl-model runs/merged

`run_deepeval()` renders prompts/answer.yaml for each row of the dataset's eval.jsonl, completes it
over HTTP, and scores each answer with the deterministic metrics of evals/deepeval_metrics.py
(ROUGE-1/2/L, BLEU, token F1, exact match, Flesch) and, with a judge, the judged ones of
evals/judge.py (GEval correctness, answer relevancy, faithfulness on rows with a context). With a
model folder it adds the eval split's perplexity. Report kind "deepeval": per metric its mean
(`deepeval.<m>.mean`, reported) and the share of rows at or past the metric's threshold
(`deepeval.<m>.pass_rate`, gated by `min_pass_rate`). Judged metrics without a judge are listed as
SKIPPED (head and passed null, a check saying so), never as passed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from evals.client import OpenAIClient
from evals.rule_evals import DEFAULT_THRESHOLDS, parallel, read_eval_rows
from llmops.files import sha256_file
from llmops.prompts import load_all
from llmops.report import Finding, Metric, Report

DATASET_PROMPT = "answer"
JUDGED = ("correctness", "answer_relevancy", "faithfulness")


def _pass_rate_metric(values: list[bool], min_pass_rate: float | None) -> Metric:
    rate = sum(values) / len(values)
    return Metric(head=rate, threshold=min_pass_rate,
                  passed=None if min_pass_rate is None else round(rate, 9) >= min_pass_rate)


def run_deepeval(base_url: str, dataset_dir: Path, prompts_dir: Path, model_dir: Path | None = None, *,
                 limit: int | None = None, judge: Any = None, thresholds_path: Path = DEFAULT_THRESHOLDS,
                 repeat: int | None = None, api_key: str | None = None, model: str | None = None,
                 workers: int = 2) -> Report:
    """Score the eval split's answers from `base_url`; `model_dir` (a Hugging Face folder) adds perplexity.

    judge: an evals.judge.OpenAIJudge, or None (judged metrics skipped). repeat: judge runs per
    case (default: the thresholds file's `repeat`).
    """
    from deepeval.test_case import LLMTestCase

    from evals.deepeval_metrics import (
        METRIC_VERSION,
        PerplexityScorer,
        corpus_perplexity,
        deterministic_metrics,
        load_deepeval_thresholds,
    )
    from evals.judge import NO_JUDGE, judge_case, judged_metric_factories, skipped

    started = time.perf_counter()
    gates = load_deepeval_thresholds(thresholds_path)
    repeat = repeat or gates.repeat
    rows = read_eval_rows(Path(dataset_dir), limit)
    prompt = load_all(Path(prompts_dir))[DATASET_PROMPT]
    params = prompt.params.model_dump()
    with OpenAIClient(base_url, api_key=api_key, model=model) as client:
        served = client.resolve_model()
        chat = client.chat_format
        rendered = [prompt.render(client.chat_format, question=r["question"],
                                  **({"context": r["context"]} if r.get("context") else {})) for r in rows]
        outputs = parallel(lambda text: client.complete(text, **params),
                           rendered, workers)

    factories = judged_metric_factories(judge, gates) if judge is not None else {}
    report = Report(kind="deepeval")
    scores: dict[str, list[float]] = {}
    passes: dict[str, list[bool]] = {}
    for row, text, output in zip(rows, rendered, outputs, strict=True):
        case = LLMTestCase(input=row["question"], actual_output=output.strip(), expected_output=row["answer"],
                           retrieval_context=[row["context"]] if row.get("context") else None)
        results = []
        for metric in deterministic_metrics(gates):
            metric.measure(case)
            scores.setdefault(metric.name, []).append(metric.score)
            passes.setdefault(metric.name, []).append(bool(metric.success))
            results.append({"type": metric.name, "passed": bool(metric.success), "score": metric.score,
                            "message": metric.reason})
        for name in JUDGED:
            judged = judge_case(name, factories[name], case, repeat) if judge is not None else skipped(name)
            if judged.passed is not None:
                scores.setdefault(name, []).append(judged.score)
                passes.setdefault(name, []).append(judged.passed)
            results.append({"type": name, "passed": judged.passed, "score": judged.score, "status": judged.status,
                            "votes": judged.votes, "message": f"{judged.status}: {judged.reason}"})
        report.cases.append({"id": row["id"], "suite": "deepeval", "prompt": text, "output": output,
                             "passed": all(r["passed"] is not False for r in results), "assertions": results})

    for name, values in sorted(scores.items()):
        report.metrics[f"deepeval.{name}.mean"] = Metric(head=sum(values) / len(values))
        report.metrics[f"deepeval.{name}.pass_rate"] = _pass_rate_metric(passes[name], getattr(gates, name).min_pass_rate)
    not_run = [n for n in JUDGED if n not in scores]
    for name in not_run:
        report.metrics[f"deepeval.{name}.pass_rate"] = Metric(head=None)  # skipped: no value, no tick
    if judge is None:
        report.add_check("LLM-judged metrics SKIPPED", [Finding(f"{', '.join(JUDGED)} skipped: {NO_JUDGE}",
                                                                severity="warning")],
                         summary="skipped, not passed")
    errors = [f"{c['id']}: {a['type']}: {a['message']}" for c in report.cases for a in c["assertions"]
              if a.get("status") == "error"]
    if judge is not None:
        report.add_check("LLM judge answered", [Finding(e, severity="error") for e in errors[:20]],
                         summary=f"{len(errors)} judge errors")

    ppl_info = None
    if model_dir is not None:
        scorer = PerplexityScorer(Path(model_dir))
        # Training appends the answer to the rendered prompt (after a space in the plain format);
        # score the same continuation.
        lead = "" if chat is not None else " "
        ppl, tokens = corpus_perplexity(Path(model_dir), rendered, [lead + r["answer"] for r in rows], scorer)
        cap = gates.perplexity.max
        report.metrics["deepeval.perplexity"] = Metric(head=ppl, threshold=cap, higher_is_better=False,
                                                       passed=None if cap is None else ppl <= cap)
        ppl_info = {"model_dir": str(model_dir), "answer_tokens": tokens}

    ungated = sorted(n for n, m in report.metrics.items() if m.passed is None and m.head is not None
                     and not n.endswith(".mean"))
    report.add_check("deepeval gates", [] if not ungated else [Finding(
        f"reported, not gated (no min_pass_rate / max): {', '.join(ungated)}", file=str(thresholds_path),
        severity="warning")])
    report.info = {
        "endpoint": base_url, "model": served, "rows": len(rows), "limit": limit,
        "dataset": {"dir": str(dataset_dir), "sha256": sha256_file(Path(dataset_dir) / "eval.jsonl")},
        "prompt": {DATASET_PROMPT: prompt.sha256},
        "metric_version": METRIC_VERSION,
        "judge": judge.info() | {"repeat": repeat} if judge is not None else {"status": "skipped", "reason": NO_JUDGE},
        "judged_metrics": {n: ("skipped" if n in not_run else "run") for n in JUDGED},
        "perplexity": ppl_info,
        "thresholds": {"file": str(thresholds_path), "sha256": sha256_file(Path(thresholds_path))},
        "duration_s": round(time.perf_counter() - started, 3),
    }
    return report
