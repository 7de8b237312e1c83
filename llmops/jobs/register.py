"""The last stage of both pipelines: register the candidate if every gate passed and it beats production.

    llmops registry register-candidate --pipeline-dir .llmops/pipeline/merge --out DIR [--neutral]

The pipeline folder says which pipeline ran in it (`pipeline.json`, written by the runner), so the
gates are that pipeline's: every earlier stage that declares a report must have verdict "pass". Promote-if-better
(`promote_if_better` in pipeline.yaml): against the current `production` version's lineage
metrics, no metric may be worse by more than the tolerance, and at least one must be better by
more than it, unless the change is declared neutral (then ties within tolerance are enough).
The report says which metric decided. On success the version gets the `candidate` alias and an
audit entry; otherwise nothing is registered and the command exits 1.

A gate report whose metrics are all reported and none judged (every `passed` null) is
inconclusive, not a pass. Beside promote-if-better, the candidate's rule-based eval (kind "eval":
the merge pipeline's rule-evals, the main pipeline's eval) and DeepEval reports are judged against
production's recorded reports of the same kind, by the rules `llmops eval --against production`
applies too (llmops/jobs/production_eval.py): measured on the same eval split (sha256) and rows,
each pass rate and dataset metric may fall at most its `max_drop` of evals/thresholds.yaml below
production's (pass rates over the case ids both ran: a case the merge added is left out, with a
warning), each DeepEval pass rate at most one row of the split. Production without a recorded eval
report, or one measured on other rows, is not comparable: nothing is registered. Production without a DeepEval report (registered by the main pipeline,
which runs none) leaves DeepEval to its absolute floors, said in the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from evals.rule_evals import DEFAULT_THRESHOLDS, load_thresholds
from governance.audit import audit_event, current_anchor
from governance.cards import write_cards
from llmops.errors import GateFailed, InputError
from llmops.jobs.pipeline import read_spec
from llmops.jobs.production_eval import (
    compare_deepeval_with_production,
    compare_eval_with_production,
    recorded_report,
)
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


def gate_outcome(path: Path) -> tuple[str, list[Finding]]:
    """("pass" | "fail" | "inconclusive" | "missing", findings) of one gate's report file. A report whose
    metrics are all reported and none judged (every `passed` null) proves nothing: inconclusive."""
    if not path.is_file():
        return "missing", [Finding("no report: the stage did not run", file=str(path))]
    verdict = json.loads(path.read_text()).get("verdict")
    if verdict != "pass":
        return str(verdict), [Finding(f"verdict {verdict}", file=str(path))]
    metrics = Report.load(path).metrics
    if metrics and all(m.passed is None for m in metrics.values()):
        return "inconclusive", [Finding(f"none of its {len(metrics)} metrics was gated (every one reported with "
                                        "passed=null): inconclusive, not a pass", file=str(path), field="metrics")]
    return "pass", []


def _reports_of_kind(paths: Mapping[str, Path], kind: str) -> tuple[str, Report] | None:
    for name, path in paths.items():
        if path.is_file() and (rep := Report.load(path)).kind == kind:
            return name, rep
    return None


def register_candidate(settings: Settings, pipeline_dir: Path, out_dir: Path, *, neutral: bool = False) -> Report:
    pipeline_name, spec = read_spec(pipeline_dir)
    report = Report(kind="register")
    outcomes: dict[str, str] = {}
    for name, stage in spec.stages.items():
        if name == "register" or not stage.report:
            continue
        outcomes[name], findings = gate_outcome(pipeline_dir / name / stage.report)
        report.add_check(f"gate {name}", findings)

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
        report.add_check(f"rule-based eval and DeepEval vs production (version {production})",
                         _against_production(settings, reg, production, pipeline_dir, spec, report.metrics))
    else:
        report.add_check("promote-if-better", [Finding("no production model yet: nothing to beat",
                                                       severity="warning")])
    report.info = {"candidate_metrics": candidate, "production": production, "neutral": neutral}
    if report.passed:
        resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
        extra = resolved.pop("_resolved", {})
        prompt = load_prompt(resolved["prompt"], settings.prompts_dir)
        gates = dict(outcomes)  # every one "pass" here (the report passed), as judged by gate_outcome
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


def _against_production(settings: Settings, reg: Any, production: str, pipeline_dir: Path, spec: Any,
                        metrics: dict[str, Metric]) -> list[Finding]:
    """Findings (and metrics, added to `metrics`) of the candidate's eval and DeepEval reports against
    production's recorded ones, by llmops/jobs/production_eval.py's rules; see the module's docstring."""
    thresholds = load_thresholds(settings.root / "evals" / "thresholds.yaml"
                                 if (settings.root / "evals" / "thresholds.yaml").is_file() else DEFAULT_THRESHOLDS)
    mine = {name: pipeline_dir / name / (s.report or "") for name, s in spec.stages.items()
            if s.report and name != "register"}
    what = f"version {production}"
    findings: list[Finding] = []
    for kind in ("eval", "deepeval"):
        cand = _reports_of_kind(mine, kind)
        if cand is None:
            continue  # this pipeline runs no such stage
        _, rec = recorded_report(reg, production, kind, verify=True)
        if rec is None:
            findings.append(Finding(
                f"{cand[0]}: production ({what}) has no recorded {kind} report: not comparable"
                if kind == "eval" else
                f"{cand[0]}: production ({what}) has no recorded DeepEval report (registered by a pipeline "
                "without one): judged on the absolute floors only", field=cand[0],
                severity="error" if kind == "eval" else "warning"))
            continue
        found, judged = (compare_eval_with_production(cand[1], rec, what, thresholds, cand[0]) if kind == "eval"
                         else compare_deepeval_with_production(cand[1], rec, what, cand[0]))
        findings += found
        metrics.update(judged)
    return findings
