"""The last stage of both pipelines: register the candidate if every gate passed and it beats production.

    llmops registry register-candidate --pipeline-dir .llmops/pipeline/merge --out DIR [--neutral]

The pipeline folder says which pipeline ran in it (`pipeline.json`, written by the runner), so the
gates are that pipeline's: every earlier stage that declares a report must have verdict "pass". Promote-if-better
(`promote_if_better` in pipeline.yaml): against the current `production` version's lineage
metrics, no metric may be worse by more than the tolerance, and at least one must be better by
more than it, unless the change is declared neutral (then ties within tolerance are enough).
The report says which metric decided. On success the version gets the `candidate` alias and an
audit entry; otherwise nothing is registered and the command exits 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from governance.audit import audit_event, current_anchor
from governance.cards import write_cards
from llmops.errors import GateFailed, InputError
from llmops.jobs.pipeline import read_spec
from llmops.lineage import build_lineage
from llmops.prompts import load_prompt
from llmops.registry import open_registry
from llmops.report import Finding, Metric, Report
from llmops.settings import Settings
from llmops.tracking import training_run_ref


def compare_with_production(candidate: Mapping[str, float], production: Mapping[str, float],
                            rules: Mapping[str, str], tolerance: float,
                            neutral: bool) -> tuple[bool, list[Finding], dict[str, Metric]]:
    """(ok, findings, metrics). A metric missing or NaN on the candidate counts as worse; NaN on
    production is not compared (a warning), never a tie."""
    findings: list[Finding] = []
    metrics: dict[str, Metric] = {}
    better = worse = 0
    for name, direction in rules.items():
        head, base = candidate.get(name), production.get(name)
        if head is None or math.isnan(head):
            findings.append(Finding(f"candidate has no metric {name!r}" if head is None else
                                    f"{name}: the candidate's value is NaN (could not be measured): counted as worse",
                                    field=name))
            worse += 1
            continue
        if base is None or math.isnan(base):
            findings.append(Finding(f"production has no metric {name!r}; not compared", field=name, severity="warning"))
            metrics[name] = Metric(head=head, higher_is_better=direction == "higher")
            continue
        gain = (head - base) if direction == "higher" else (base - head)
        verdict = "better" if gain > tolerance else "worse" if gain < -tolerance else "tie"
        better += verdict == "better"
        worse += verdict == "worse"
        metrics[name] = Metric(head=head, base=base, threshold=tolerance, passed=verdict != "worse",
                               higher_is_better=direction == "higher")
        findings.append(Finding(f"{name}: {head:.4f} vs production {base:.4f} ({direction} is better): {verdict} "
                                f"(tolerance {tolerance})", field=name,
                                severity="error" if verdict == "worse" else "warning"))
    ok = worse == 0 and (better > 0 or neutral)
    if worse == 0 and better == 0 and not neutral:
        findings.append(Finding("ties production on every metric; register it only with --neutral "
                                "(a change meant to be neutral)", field="promote_if_better"))
    return ok, findings, metrics


def _eval_split_sha256(pipeline_dir: Path, spec: Any) -> str | None:
    """sha256 of the eval split recorded by the rule-evals report (evals/rule_evals.py info.dataset)."""
    for name, stage in spec.stages.items():
        path = pipeline_dir / name / (stage.report or "")
        if stage.report and path.is_file():
            sha = (Report.load(path).info.get("dataset") or {}).get("sha256")
            if sha:
                return str(sha)
    return None


def register_candidate(settings: Settings, pipeline_dir: Path, out_dir: Path, *, neutral: bool = False) -> Report:
    pipeline_name, spec = read_spec(pipeline_dir)
    report = Report(kind="register")
    for name, stage in spec.stages.items():
        if name == "register" or not stage.report:
            continue
        path = pipeline_dir / name / stage.report
        if not path.is_file():
            report.add_check(f"gate {name}", [Finding("no report: the stage did not run", file=str(path))])
            continue
        verdict = json.loads(path.read_text()).get("verdict")
        report.add_check(f"gate {name}", [] if verdict == "pass" else [Finding(f"verdict {verdict}", file=str(path))])

    run_dir = pipeline_dir / "train" / "run"
    if not (run_dir / "metrics.json").is_file():
        raise InputError("no trained model in the pipeline folder", file=str(run_dir))
    train_metrics = json.loads((run_dir / "metrics.json").read_text())
    candidate = {k: v for k, v in train_metrics.items() if isinstance(v, int | float)}
    for name, stage in spec.stages.items():  # every gate report's metrics, namespaced on a clash
        path = pipeline_dir / name / (stage.report or "")
        if stage.report and name != "register" and path.is_file():
            for metric, m in Report.load(path).metrics.items():
                if m.head is not None:
                    candidate[metric if metric not in candidate else f"{name}.{metric}"] = m.head

    # The eval split the candidate's dataset metrics were measured on: production's must be the same
    # one, or the comparison mixes two test sets.
    split = _eval_split_sha256(pipeline_dir, spec)
    reg = open_registry(settings)
    production = reg.aliases().get("production")
    if production:
        prod_lineage = reg.get(production).lineage
        prod_metrics = prod_lineage.get("metrics", {})
        ok, findings, metrics = compare_with_production(candidate, prod_metrics, spec.promote_if_better.metrics,
                                                        spec.promote_if_better.tolerance, neutral)
        prod_split = prod_lineage.get("eval_split_sha256")
        if prod_split is None or split is None:
            findings.append(Finding("cannot tell whether production was measured on the same eval split (no sha256 "
                                    "recorded): the comparison may mix two test sets", severity="warning",
                                    field="eval_split_sha256"))
        elif prod_split != split:
            findings.append(Finding(f"production was measured on eval split {prod_split[:12]}…, the candidate on "
                                    f"{split[:12]}…: not comparable (re-measure production on this split)",
                                    field="eval_split_sha256"))
        report.metrics.update(metrics)
        report.add_check(f"promote-if-better vs production (version {production})", findings)
    else:
        report.add_check("promote-if-better", [Finding("no production model yet: nothing to beat",
                                                       severity="warning")])
    report.info = {"candidate_metrics": candidate, "production": production, "neutral": neutral}
    if report.passed:
        resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
        extra = resolved.pop("_resolved", {})
        prompt = load_prompt(resolved["prompt"], settings.prompts_dir)
        gates = {name: "pass" for name, s in spec.stages.items() if s.report and name != "register"}
        lineage = build_lineage(root=settings.root,
                                datasets=[settings.root / d for d in (resolved["dataset"], *resolved.get("extra_datasets", []))],
                                prompts={prompt.id: prompt.sha256}, config=resolved,
                                base_model={**extra.get("base_model", {}), "path": extra.get("base_model_path")},
                                metrics=candidate, gates=gates)
        lineage["eval_split_sha256"] = split
        reports = pipeline_dir / "register" / "gate-reports"
        for name in gates:  # each gate's report files (json, and markdown for reading), not the models beside them
            src = (pipeline_dir / name / (spec.stages[name].report or "")).parent
            (reports / name).mkdir(parents=True, exist_ok=True)
            for f in src.iterdir():
                if f.is_file() and f.suffix in (".json", ".md"):
                    (reports / name / f.name).write_bytes(f.read_bytes())
        lineage["audit_anchor"] = current_anchor(settings)  # `llmops audit verify --registry-anchors`
        if tracked := training_run_ref(run_dir):  # the MLflow run of the training (llmops/tracking.py)
            lineage["training_run"] = tracked
        mv = reg.register({"model": run_dir / "merged", "adapter": run_dir / "adapter",
                           "onnx": pipeline_dir / "export" / "onnx", "loss_curve.png": run_dir / "loss_curve.png",
                           "reports": reports}, lineage)
        for name in gates:  # browsable beside the version: <registry>/reports/<version>/<gate>/
            reg.attach_report(mv.version, name, reports / name)
        moved = reg.set_alias("candidate", mv.version,
                              reason=f"{pipeline_name} pipeline: all gates passed, promote-if-better")
        audit_event("registry.register", target=f"version {mv.version}",
                    details={"alias": "candidate", "git": lineage["git"], "neutral": neutral, "job": pipeline_name,
                             "alias_history_hash": moved["hash"]}, settings=settings)
        report.info["registered"] = mv.version
        report.info["cards"] = [str(p) for p in write_cards(reg, mv.version, repo_root=settings.root)]
    report.write(out_dir)
    if not report.passed:
        why = [f"{c.name}: {f.message}" for c in report.checks for f in c.findings if f.severity == "error"]
        raise GateFailed("candidate not registered:\n  " + "\n  ".join(why))
    return report
