"""The tuned model beside its untuned base: the `base_comparison` gate of evals/thresholds.yaml.

    llmops eval --model DIR --dataset datasets/python-faq --limit 40 --compare-base BASE/report.json

`must_beat` metrics must be higher than the base's, `no_drop` ones not lower, `report` ones are only
reported. The base report comes from `llmops eval-base` (llmops/jobs/base_eval.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.rule_evals import DEFAULT_THRESHOLDS, load_thresholds
from llmops.report import Finding, Report


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


def apply_base_comparison(report: Report, base_report: Report, *, thresholds: Path | None,
                          tuned_id: str = "candidate") -> str:
    """Fill the report's base column from `base_report`, add the "tuned beats base" check (the
    base_comparison rules of the thresholds file) and return the side-by-side table (also in info)."""
    for name, metric in report.metrics.items():
        if name in base_report.metrics:
            metric.base = base_report.metrics[name].head
    base_id = str(base_report.info.get("model") or base_report.info.get("base_model") or "base")
    rules = load_thresholds(thresholds or DEFAULT_THRESHOLDS).base_comparison
    report.add_check("tuned beats base", compare_with_base(report, base_report, rules),
                     summary=f"higher: {', '.join(rules.must_beat) or '-'}; "
                             f"not lower: {', '.join(rules.no_drop) or '-'}")
    table = comparison_table(report, base_report, base_id, tuned_id)
    report.info.update({"baseline": f"untuned base model {base_id}", "comparison": table})
    return table
