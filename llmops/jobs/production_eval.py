"""An eval judged against the eval report recorded with a registry version (production's, usually).

Two callers share it: `llmops eval --against production` (the nightly eval and the Kubernetes probe
Jobs: llmops/cli/evals.py) and registration (llmops/jobs/register.py: the candidate's rule-based eval
and DeepEval reports against production's). Each registered version carries its gate reports under
`files/reports/<gate>/report.json`; `recorded_report` finds the one of a kind.

The rules, one set for both callers:

- Dataset metrics are compared only when both sides were measured on the same eval split (sha256)
  and the same number of rows (`same_split`); otherwise, or when the recorded value is missing or NaN,
  an error: not comparable (inconclusive, never a pass).
- Pass rates are compared over the case ids both sides ran in the same suite. A case only this run
  has (a merge that added one) or only the recorded eval has (one deleted since) is left out of the
  comparison, named in a warning, and still counts in the run's own pass rate against its absolute
  floor. A suite with no case in common is judged on its absolute floor only (a warning). A recorded
  eval with nothing in common at all (no case, no dataset metric) is an error: nothing was compared.
- Each compared metric may fall at most its `max_drop` of evals/thresholds.yaml below the recorded
  value (`evals.rule_evals.gate_value`, the one floor rule); DeepEval pass rates at most one row.

`comparable_baseline` builds, from the recorded report, the baseline Report these rules allow: pass
rates recomputed over the common case ids (`info["compared"]`), dataset metrics only on the same
split and rows. `gate_against` judges a finished report with it; the CLI feeds the whole-suite part
of it to `run_eval(baseline=...)` (`run_baseline`), so the run's own metrics carry the drop gate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evals.rule_evals import Gate, Thresholds, gate_value, load_cases, select_cases
from llmops.files import sha256_file
from llmops.registry import open_registry
from llmops.report import Finding, Metric, Report
from llmops.settings import Settings


def recorded_report(reg: Any, ref: str, kind: str = "eval", *, verify: bool = False) -> tuple[str, Report | None]:
    """(version, the first of its gate reports of this kind, or None) of registry version or alias `ref`."""
    mv = reg.get(ref, verify=verify)
    for gate in (mv.lineage.get("gates") or {}):
        path = mv.files / "reports" / gate / "report.json"
        if path.is_file() and (recorded := Report.load(path)).kind == kind:
            recorded.info["recorded_as"] = f"version {mv.version}, gate {gate}"
            return str(mv.version), recorded
    return str(mv.version), None


def recorded_eval(settings: Settings, ref: str) -> tuple[str, Report | None, list[Finding]]:
    """(what it is, the eval report recorded with registry version `ref`, findings). No version with
    that alias yet (a first release): no report, a warning. An empty registry, or a version with no
    eval report among its gate reports: no report, an error (inconclusive)."""
    reg = open_registry(settings)
    if not reg.versions():
        return ref, None, [Finding(f"the registry has no version: {ref}'s recorded eval cannot be read, so the "
                                   "endpoint is judged on the absolute floors only (inconclusive, not a pass)",
                                   file=str(settings.registry_dir), field="against")]
    if not ref.isdigit() and ref not in reg.aliases():
        return ref, None, [Finding(f"no version has the alias {ref!r} yet (a first release): judged on the absolute "
                                   "floors only", field="against", severity="warning")]
    version, recorded = recorded_report(reg, ref)
    what = f"{ref} (version {version})" if ref != version else f"version {version}"
    if recorded is None:
        return what, None, [Finding(f"{what} has no recorded eval report among its gate reports: nothing to "
                                    "compare with (inconclusive)", field="against")]
    return what, recorded, []


def same_split(mine: Mapping[str, Any], theirs: Mapping[str, Any], what: str, where: str,
               me: str = "the candidate") -> Finding | None:
    """An error when two measurements ({"sha256", "rows"}) were not made on the same eval split and rows."""
    if not mine.get("sha256") or mine.get("sha256") != theirs.get("sha256"):
        return Finding(f"{where}: {what} was measured on eval split {str(theirs.get('sha256') or 'unknown')[:12]}, "
                       f"{me} on {str(mine.get('sha256') or 'unknown')[:12]}: not comparable", field=f"{where}.dataset")
    if mine.get("rows") is None or mine.get("rows") != theirs.get("rows"):
        return Finding(f"{where}: {what} scored {theirs.get('rows')} rows of the eval split, {me} "
                       f"{mine.get('rows')}: not comparable", field=f"{where}.dataset.rows")
    return None


def split_of(report: Report) -> dict[str, Any]:
    """{"sha256", "rows"} a report was measured on (eval reports keep the rows under info.dataset, DeepEval's under info)."""
    data = report.info.get("dataset") or {}
    return {"sha256": data.get("sha256"), "rows": data.get("rows", report.info.get("rows"))}


def planned_split(dataset_dir: Path, limit: int | None, recorded: Report) -> dict[str, Any]:
    """{"sha256", "rows"} an eval about to run on `dataset_dir` will measure: --limit rows, or by default
    as many as the recorded eval scored (run_eval reads the first `limit` rows)."""
    split = Path(dataset_dir) / "eval.jsonl"
    return {"sha256": sha256_file(split) if split.is_file() else None,
            "rows": limit if limit is not None else split_of(recorded)["rows"]}


def selected_cases(cases_dir: Path, prompts_dir: Path, tags: Sequence[str],
                   prompt_ids: Sequence[str]) -> dict[str, list[str]]:
    """{suite: case ids} an eval with these filters runs."""
    by_suite: dict[str, list[str]] = {}
    for case in select_cases(load_cases(cases_dir, prompts_dir), tags, prompt_ids):
        by_suite.setdefault(str(case.suite), []).append(case.id)
    return by_suite


def _listed(ids: Sequence[str]) -> str:
    return ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")


def comparable_baseline(recorded: Report, what: str, cases: Mapping[str, Sequence[str]],
                        dataset: Mapping[str, Any] | None, where: str = "",
                        me: str = "the candidate") -> tuple[Report, list[Finding]]:
    """(baseline report, findings): the part of `recorded` a run of these cases ({suite: ids}) on this
    split ({"sha256", "rows"}; None: the run measures no dataset metrics) can be compared with. See
    the module's docstring for the rules; each finding's field is prefixed with `where`."""
    pre = f"{where}." if where else ""
    findings: list[Finding] = []
    base = Report(kind="eval", info={"model_version": what, "compared": {}})
    theirs = {c["id"]: c for c in recorded.cases if "id" in c}
    for suite, ids in sorted(cases.items()):
        name = f"pass_rate.{suite}"
        common = [i for i in ids if i in theirs and str(theirs[i].get("suite")) == suite]
        gone = sorted(i for i, c in theirs.items() if str(c.get("suite")) == suite and i not in set(ids))
        new = [i for i in ids if i not in set(common)]
        if not common:
            findings.append(Finding(f"{pre}{name}: no case in common with {what}'s eval: judged on its absolute "
                                    "floor only", field=f"{pre}{name}", severity="warning"))
            continue
        if new or gone:
            findings.append(Finding(
                f"{pre}{name}: compared over the {len(common)} cases both ran; left out: "
                + "; ".join(part for part in (f"{len(new)} only {me} ran ({_listed(new)})" if new else "",
                                              f"{len(gone)} only {what} ran ({_listed(gone)})" if gone else "") if part),
                field=f"{pre}{name}", severity="warning"))
        base.info["compared"][suite] = common
        base.metrics[name] = Metric(head=sum(bool(theirs[i].get("passed")) for i in common) / len(common))
    if dataset is not None:
        if (bad := same_split(dataset, split_of(recorded), what, where or "dataset metrics", me)) is not None:
            findings.append(bad)
        else:
            base.info["dataset"] = {"sha256": dataset["sha256"], "rows": dataset["rows"],
                                    "recorded": sorted(n for n in recorded.metrics if n.startswith("dataset."))}
            for name, m in sorted(recorded.metrics.items()):
                if not name.startswith("dataset."):
                    continue
                if m.head is None or math.isnan(m.head):
                    findings.append(Finding(f"{pre}{name}: {what}'s recorded value is missing or NaN: not comparable",
                                            field=f"{pre}{name}"))
                else:
                    base.metrics[name] = Metric(head=m.head)
    if not base.metrics and not any(f.severity == "error" for f in findings):
        findings.append(Finding(f"{where or 'eval'}: nothing in common with {what}'s eval (no case, no dataset "
                                "metric): nothing compared (inconclusive)", field=where or "against"))
    return base, findings


def run_baseline(baseline: Report, cases: Mapping[str, Sequence[str]]) -> Report:
    """The part of `baseline` that `run_eval(baseline=...)` can gate in place: dataset metrics and the pass
    rates of suites whose every case the recorded eval ran (run_eval's pass rate is over the whole suite)."""
    whole = Report(kind="eval", info=dict(baseline.info))
    whole.metrics = {n: m for n, m in baseline.metrics.items()
                     if not n.startswith("pass_rate.")
                     or len(baseline.info["compared"].get(n.removeprefix("pass_rate."), [])) == len(cases.get(
                         n.removeprefix("pass_rate."), []))}
    return whole


def _judged(findings: list[Finding], metrics: dict[str, Metric], key: str, gate: Gate, head: float,
            base: float, who: str, note: str = "") -> None:
    metric = gate_value(gate, head, base)
    metrics[key] = metric
    if not metric.passed:
        findings.append(Finding(f"{key}: {head:.4f} vs {who} {base:.4f}{note}, below the floor "
                                f"{metric.threshold:.4f} ({who} - max_drop): a regression", field=key))


def gate_against(candidate: Report, baseline: Report, thresholds: Thresholds, where: str = "",
                 who: str = "production", skip: Sequence[str] = ()) -> tuple[list[Finding], dict[str, Metric]]:
    """(findings, metrics `<where>.<name>`) of each metric of `candidate` the baseline holds (but `skip`),
    at most its `max_drop` below it: pass rates over the baseline's compared case ids."""
    pre = f"{where}." if where else ""
    findings: list[Finding] = []
    metrics: dict[str, Metric] = {}
    outcomes = {c["id"]: bool(c.get("passed")) for c in candidate.cases if "id" in c}
    for name, m in sorted(candidate.metrics.items()):
        base = baseline.metrics.get(name)
        gate = Gate(max_drop=thresholds.for_metric(name).max_drop)
        if name in skip or m.head is None or gate.max_drop is None:
            continue
        if (base is None and name.startswith("dataset.") and "dataset" in baseline.info
                and name not in baseline.info["dataset"]["recorded"]):
            findings.append(Finding(f"{pre}{name}: {who}'s recorded eval has no value: not comparable", field=pre + name))
        if base is None or base.head is None:
            continue
        if name.startswith("pass_rate."):
            ids = [i for i in baseline.info["compared"][name.removeprefix("pass_rate.")] if i in outcomes]
            if not ids:
                continue
            _judged(findings, metrics, pre + name, gate, sum(outcomes[i] for i in ids) / len(ids), base.head, who,
                    f" (over the {len(ids)} cases both ran)")
        else:
            _judged(findings, metrics, pre + name, gate, m.head, base.head, who)
    return findings, metrics


def compare_eval_with_production(candidate: Report, recorded: Report, what: str, thresholds: Thresholds,
                                 where: str = "eval") -> tuple[list[Finding], dict[str, Metric]]:
    """A finished rule-based eval against production's recorded one (registration), by the module's rules."""
    cases: dict[str, list[str]] = {}
    for case in candidate.cases:
        if "id" in case:
            cases.setdefault(str(case.get("suite")), []).append(case["id"])
    baseline, findings = comparable_baseline(recorded, f"production ({what})", cases, split_of(candidate), where)
    found, metrics = gate_against(candidate, baseline, thresholds, where)
    return findings + found, metrics


def compare_deepeval_with_production(candidate: Report, recorded: Report, what: str,
                                     where: str = "deepeval") -> tuple[list[Finding], dict[str, Metric]]:
    """DeepEval pass rates against production's recorded ones on the same split and rows: each may fall at
    most one row of the split (the margin evals/thresholds.yaml gives its floors: one case)."""
    if (bad := same_split(split_of(candidate), split_of(recorded), f"production ({what})", where)) is not None:
        return [bad], {}
    rows = int(split_of(candidate)["rows"] or 0)
    if rows <= 0:
        return [Finding(f"{where}: the candidate's report records no row count", field=f"{where}.rows")], {}
    findings: list[Finding] = []
    metrics: dict[str, Metric] = {}
    for name, m in sorted(candidate.metrics.items()):
        base = recorded.metrics.get(name)
        if not name.endswith(".pass_rate") or m.head is None:
            continue
        if base is None or base.head is None or math.isnan(base.head):
            findings.append(Finding(f"{where}.{name}: production recorded no value (a metric it did not run): "
                                    "judged on its absolute floor only", field=f"{where}.{name}", severity="warning"))
            continue
        _judged(findings, metrics, f"{where}.{name}", Gate(max_drop=1.0 / rows), m.head, base.head, "production",
                f" ({rows} rows)")
    return findings, metrics
