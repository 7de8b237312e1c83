"""The main job on the embedded default: real data to a served, evaluated model, on a CPU.

    llmops pipeline main

data check -> bootstrap base model -> LoRA train -> ONNX export + parity gate -> register
(alias `candidate`) -> serve the registered ONNX model on loopback -> eval over HTTP -> stop.
Each stage writes files into one job folder; the job prints where the eval report is.
A failed gate stops the job before registration and exits 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.errors import GateFailed
from llmops.settings import Settings


@dataclass
class JobResult:
    job_dir: Path
    version: str | None = None
    eval_report: Path | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)


def run_main_job(settings: Settings, *, config_path: Path, overrides: tuple[str, ...] = (),
                 eval_limit: int = 40, echo: Callable[[str], None] = print, progress: bool = True) -> JobResult:
    from governance.datacheck import check_dataset
    from llmops.lineage import build_lineage
    from llmops.prompts import load_prompt
    from llmops.registry import Registry
    from llmops.report import Report
    from training.config import load_config
    from training.finetune import resolve_base_model, train

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

    def data_check() -> Report:
        report = Report(kind="data-check")
        report.checks.extend(check_dataset(dataset_dir))
        report.write(job.job_dir / "data-check")
        if not report.passed:
            bad = [f"{c.name}: {f.where()} {f.message}" for c in report.checks for f in c.findings][:5]
            raise GateFailed("data check failed:\n  " + "\n  ".join(bad))
        return report

    stage("data check", data_check)
    base_path, base_info = stage("bootstrap base model", lambda: resolve_base_model(cfg, settings, progress=progress))
    echo(f"    base model: {base_info['id']} ({'cached' if base_info.get('cached') else 'built'})")
    trained = stage("train (LoRA)", lambda: train(cfg, settings, run_dir=job.job_dir / "train", progress=progress))
    echo(f"    eval loss {trained.metrics['eval_loss']}, perplexity {trained.metrics['perplexity']}")

    prompt = load_prompt(cfg.prompt, settings.prompts_dir)

    def export() -> Any:
        from serving.export import export_model, parity_prompts

        prompts = parity_prompts(prompt, dataset_dir / "eval.jsonl", 16)
        return export_model(trained.merged_dir, job.job_dir / "onnx", dtypes=["fp32", "int8"], prompts=prompts)

    exported = stage("export ONNX + parity gate", export)  # raises GateFailed below 100% fp32 agreement
    parity = {"agreement_pct": exported.agreement, "skipped": exported.skipped, "passed": exported.passed}
    echo("    parity (greedy tokens agreeing with torch): " + ", ".join(
        f"{k} {v:.1f}%" if v is not None else f"{k} n/a" for k, v in exported.agreement.items()))
    if not exported.passed:
        raise GateFailed(f"export parity gate failed; not registered (see {exported.report_path})")

    def register() -> str:
        lineage = build_lineage(
            root=settings.root, datasets=[dataset_dir], prompts={prompt.id: prompt.sha256},
            config=cfg.model_dump(mode="json"), base_model={**base_info, "path": str(base_path)},
            metrics={**trained.metrics, **{f"parity_{k}_pct": v for k, v in exported.agreement.items()}},
            gates={"data-check": "passed", "export-parity": parity},
        )
        reg = Registry(settings.registry_dir)
        mv = reg.register({"model": trained.merged_dir, "adapter": trained.adapter_dir,
                           "onnx": exported.out_dir, "loss_curve.png": trained.run_dir / "loss_curve.png"},
                          lineage)
        reg.set_alias("candidate", mv.version, reason="main job: all gates passed")
        return mv.version

    job.version = stage("register", register)
    echo(f"    registered version {job.version} (alias candidate)")

    def serve_and_eval() -> Path:
        from evals.runner import run_eval
        from llmops.registry import Registry
        from serving.app import running_server

        reg = Registry(settings.registry_dir)
        mv = reg.get(job.version)  # verifies every checksum before serving
        out = job.job_dir / "eval"
        with running_server(mv.files / "onnx" / "fp32") as base_url:
            echo(f"    serving version {job.version} at {base_url}")
            report = run_eval(base_url, cases_dir=settings.root / "evals" / "cases",
                              prompts_dir=settings.prompts_dir, dataset_dir=dataset_dir,
                              model_name=f"llmops-{job.version}", limit=eval_limit)
        report.info.update({"model": f"registry version {job.version}", "job": str(job.job_dir)})
        report.write(out)
        reg.attach_report(job.version, "eval", out)
        return out / "report.md"

    job.eval_report = stage("serve + eval over HTTP", serve_and_eval)
    (job.job_dir / "job.json").write_text(json.dumps(
        {"version": job.version, "stages": job.stages, "eval_report": str(job.eval_report)}, indent=2) + "\n")
    return job
