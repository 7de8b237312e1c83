"""The untuned base model's eval, exported and served as a candidate is, cached by content.

    llmops eval-base --config training/config.yaml --dataset datasets/python-faq --limit 40 --out DIR

The main pipeline (pipeline.yaml, `llmops pipeline main`) runs it as its base-eval stage; its eval
stage gates the candidate against the report (`llmops eval --compare-base`, evals/compare.py).
The base model is exported to ONNX and served the way the candidate is, so the two reports differ
only in the weights. Its report is reused from evals/baseline/base-model.json when that file's
`eval_key` (the sha256 of model, cases, prompts, eval split, limit and eval code) matches, else from
the cache under that key, else measured and cached.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from evals.assertions import ASSERTIONS
from evals.rule_evals import run_eval
from llmops.files import atomic_dir, sha256_file, sha256_tree
from llmops.report import Report
from llmops.settings import Settings
from serving.app import running_server
from serving.export import export_model
from serving.guards import GUARD_FILES
from training.config import load_config
from training.finetune import resolve_base_model

# The untuned base model's eval, versioned with the cases it measured.
BASE_EVAL_COMMITTED = "evals/baseline/base-model.json"


def _eval_key(settings: Settings, model_id: str, dataset_dir: Path, limit: int) -> str:
    """Content hash of what decides an eval report: model, cases, prompts, eval split, limit, code, and the
    guards in front of the model (on or off, their code and data: they answer some cases)."""
    material = {
        "model": model_id, "limit": limit, "guards": settings.guards, "scope_check": settings.scope_check,
        "cases": sha256_tree(settings.root / "evals" / "cases"), "prompts": sha256_tree(settings.prompts_dir),
        "eval_split": sha256_file(dataset_dir / "eval.jsonl"),
        "assertions": {name: a.version for name, a in sorted(ASSERTIONS.items())},
        "code": {p: sha256_file(settings.root / p) for p in
                 ("evals/rule_evals.py", "evals/metrics.py", "serving/export.py", "serving/graph_edits.py", "serving/runtime.py", "serving/sampling.py", "serving/app.py", "serving/streaming.py", "serving/batching.py", "serving/prefix_cache.py",
                  "llmops/prompts.py", *GUARD_FILES)
                 if (settings.root / p).is_file()},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def serve_and_eval(settings: Settings, model_dir: Path, *, dataset_dir: Path, limit: int, model_id: str,
                   baseline: Report | None = None, thresholds: Path | None = None) -> Report:
    with running_server(model_dir) as base_url:
        return run_eval(base_url, cases_dir=settings.root / "evals" / "cases", prompts_dir=settings.prompts_dir,
                        dataset_dir=dataset_dir, model_name=model_id, limit=limit, baseline=baseline,
                        thresholds_path=thresholds)


def base_model_eval(settings: Settings, base_path: Path, base_id: str, *, dataset_dir: Path, limit: int,
                    echo: Callable[[str], None]) -> Report:
    """The untuned base model's eval report, exported and served like the candidate; cached by content."""
    key = _eval_key(settings, base_id, dataset_dir, limit)
    committed = settings.root / BASE_EVAL_COMMITTED
    if committed.is_file():
        report = Report.load(committed)
        if report.info.get("eval_key") == key:
            echo(f"    base model eval from {BASE_EVAL_COMMITTED} (same model, cases, prompts, split and code)")
            return report
        echo(f"    {BASE_EVAL_COMMITTED} is for other inputs (key {report.info.get('eval_key')}, now {key}): "
             "measuring again")
    cached = settings.cache_dir / "base-eval" / key / "report.json"
    if cached.is_file():
        echo(f"    base model eval from cache ({cached.parent})")
        return Report.load(cached)
    export_dir = settings.cache_dir / "base-onnx" / base_id.replace(":", "-").replace("@", "-")
    if not (export_dir / "fp32" / "model.onnx").is_file():
        echo("    exporting the base model to ONNX once (fp32, cached) ...")
        export_model(base_path, export_dir, dtypes=["fp32"], parity_n=2, max_new_tokens=8)
    report = serve_and_eval(settings, export_dir, dataset_dir=dataset_dir, limit=limit, model_id=base_id)
    report.info["eval_key"] = key
    with atomic_dir(cached.parent) as tmp:
        report.write(tmp)
    echo(f"    cached in {cached}; commit it as {BASE_EVAL_COMMITTED} to spare fresh clones this step")
    return report


def base_eval_of_config(settings: Settings, config_path: Path, *, dataset_dir: Path, limit: int,
                        echo: Callable[[str], None] = print, progress: bool = False) -> Report:
    """The eval report of the base model that training config `config_path` tunes (resolved, and built or
    converted once when not cached, as `llmops train` does)."""
    cfg = load_config(config_path)
    base_path, base_info = resolve_base_model(cfg, settings, progress=progress)
    echo(f"base model: {base_info['id']} ({'cached' if base_info.get('cached') else 'built'})")
    report = base_model_eval(settings, Path(base_path), base_info["id"], dataset_dir=dataset_dir, limit=limit,
                             echo=echo)
    report.info["base_model"] = base_info["id"]
    return report
