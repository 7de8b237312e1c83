"""What a pull request changes in the PR gate itself, and the one explicit override that accepts it.

The gate judges a pull request with the base ref's rules (llmops/jobs/pr_gate.py): its thresholds,
its cases and its eval split. A PR that edits those is changing the ruler it is measured with, so
each such change is a finding of its own that fails the gate:

- thresholds: every value of evals/thresholds.yaml that differs from the base's, named with the
  old and new value (and whether it loosens or tightens the gate);
- cases: a case of the base that is gone from the PR (deleted, or renamed: the new id is named when
  the definition is the same), whether it passes or fails on main, and a case whose definition
  (prompt, vars, assertions, suite, tags) the PR edits under the same id;
- eval rows: a row of the eval split removed, renamed, added, edited under its id, or moved (the
  gate scores the first rows, and every baseline compares by id).

`llmops gate pr --allow-gate-changes REASON [--override-label LABEL]` turns these findings into
warnings and records the override in report.json (`info.override`) and at the top of report.md.
The pull-request workflow passes it only when the PR carries OVERRIDE_LABEL, and .github/CODEOWNERS
requires the eval owners' review of every path these checks read.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.rule_evals import EvalCase, load_thresholds
from llmops.dataset import read_jsonl
from llmops.errors import InputError
from llmops.report import GITHUB_COMMENT_LIMIT, Finding, Report, render_markdown

OVERRIDE_LABEL = "eval-gate-change"  # the pull-request label .github/workflows/pr.yml maps to the flag
EVAL_SPLIT = "datasets/python-faq/eval.jsonl"  # the rows the gate scores for ROUGE-L and token F1
THRESHOLDS = "evals/thresholds.yaml"
MAX_NAMED = 50  # changes named one by one per check; the rest are counted in one more finding
NEEDS = f"a change to the gate itself needs the `{OVERRIDE_LABEL}` label (an eval owner's approval)"
# Keys whose larger value is a looser gate; for every other number a smaller value is looser.
LOOSER_WHEN_LARGER = {"max_drop", "max", "max_false_alarm_rate"}


@dataclass
class Override:
    """`--allow-gate-changes REASON`: accept this PR's changes to the gate, as warnings, on the record."""

    reason: str
    label: str | None = None  # the pull-request label that granted it (the workflow passes it)

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise InputError("the override needs a reason", field="--allow-gate-changes")
        if self.label is not None and not self.label.strip():
            raise InputError("the label is empty", field="--override-label")

    def by(self) -> str:
        return f"the label `{self.label}`" if self.label else "the command line (no pull-request label)"


def _capped(findings: list[Finding], what: str) -> list[Finding]:
    if len(findings) <= MAX_NAMED:
        return findings
    rest = len(findings) - MAX_NAMED
    return findings[:MAX_NAMED] + [Finding(f"... and {rest} more {what} (not named here)", file=findings[0].file)]


# --------------------------------------------------------------------------- thresholds


def _direction(key: str, before: Any, after: Any) -> str:
    if isinstance(before, bool) or isinstance(after, bool):
        return "changes"
    if before is None or after is None:  # a bound removed is looser; a bound added is tighter
        return "loosens" if after is None else "tightens"
    if not isinstance(before, int | float) or not isinstance(after, int | float):
        return "changes"
    larger_is_looser = key in LOOSER_WHEN_LARGER
    return "loosens" if (after > before) == larger_is_looser else "tightens"


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def threshold_changes(old_path: Path, new_path: Path) -> list[Finding]:
    """Each value of the PR's thresholds file that differs from the base's, by name, old -> new.

    The gate keeps applying the base's values; the new ones take effect after merge. A file the PR
    broke or deleted is one finding naming where."""
    try:
        new = load_thresholds(new_path)
    except InputError as exc:
        return [Finding(f"the PR's thresholds file does not load: {exc}", file=THRESHOLDS, line=exc.line,
                        field=exc.field)]
    old = load_thresholds(old_path)
    findings = []
    # Suite and dataset gates, by the metric they judge (a suite the PR lists falls back to default_suite on main).
    names = {f"pass_rate.{s}" for s in {*old.suites, *new.suites}} | {f"dataset.{m}" for m in {*old.metrics, *new.metrics}}
    for name in sorted(names):
        before, after = old.for_metric(name), new.for_metric(name)
        changes = [(_direction(key, getattr(before, key), getattr(after, key)), key, getattr(before, key),
                    getattr(after, key)) for key in ("min", "max_drop") if getattr(before, key) != getattr(after, key)]
        if changes:
            what = ", ".join(f"{d} {k} {b} -> {a}" for d, k, b, a in changes)
            findings.append(Finding(f"{name}: this PR {what}; the gate applies "
                                    f"the base's thresholds, the new ones take effect after merge; {NEEDS}",
                                    file=THRESHOLDS, field=name))
    # Every other value (default_suite, deepeval, safety, base_comparison), as dotted keys.
    skip = ("suites.", "metrics.")
    before_flat = {k: v for k, v in _flat(old.model_dump()).items() if not k.startswith(skip)}
    after_flat = {k: v for k, v in _flat(new.model_dump()).items() if not k.startswith(skip)}
    for key in sorted(set(before_flat) | set(after_flat)):
        before_v, after_v = before_flat.get(key), after_flat.get(key)
        if before_v != after_v:
            direction = _direction(key.rsplit(".", 1)[-1], before_v, after_v)
            findings.append(Finding(f"{key}: this PR {direction} it, {before_v} -> {after_v}; {NEEDS}",
                                    file=THRESHOLDS, field=key))
    return _capped(findings, "threshold changes")


# --------------------------------------------------------------------------- cases


def _definition(case: EvalCase, *, with_selectors: bool = True) -> dict[str, Any]:
    data = case.model_dump(by_alias=True, exclude={"file", "line", "description", "id"})
    if not with_selectors:
        data.pop("tags", None)
        data.pop("suite", None)
    return data


def case_changes(base_cases: list[EvalCase], head_cases: list[EvalCase], passed_on_main: dict[str, bool | None],
                 roots: tuple[Path, ...]) -> list[Finding]:
    """Every case of the base that the PR deletes, renames or redefines, passing on main or failing.

    Deleting a passing case hides a regression; deleting a failing one hides a known failure;
    renaming a case makes it "new" (never compared); editing its assertions under the same id
    compares a different check with main's result."""
    head = {c.id: c for c in head_cases}
    base_ids = {c.id for c in base_cases}
    added = [c for c in head_cases if c.id not in base_ids]

    def rel(path: str) -> str:  # repo-relative: the report is posted
        p = Path(path)
        return next((p.relative_to(r).as_posix() for r in roots if p.is_absolute() and p.is_relative_to(r)), path)

    findings = []
    for case in base_cases:
        result = passed_on_main.get(case.id)
        state = ("main's result for it was not measured in this run" if result is None else
                 "it passes on main" if result else "it fails on main")
        if case.id not in head:
            same = [c.id for c in added if _definition(c, with_selectors=False) == _definition(case, with_selectors=False)]
            how = f"renamed to {same[0]}" if same else "deleted or renamed"
            hides = ("" if result is None else " (removing it hides a regression)" if result else
                     " (removing it hides a known failure instead of fixing it)")
            findings.append(Finding(f"case {case.id} is gone from this PR ({how}); {state}{hides}; retire or rename "
                                    f"cases on main with a new baseline, or {NEEDS}",
                                    file=rel(case.file), line=case.line, field=case.id))
            continue
        before, after = _definition(case), _definition(head[case.id])
        fields = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if fields:
            findings.append(Finding(f"case {case.id}: this PR edits its {', '.join(fields)} under the same id, so its "
                                    f"result is compared with main's result for a different check; {state}; {NEEDS}",
                                    file=rel(head[case.id].file), line=head[case.id].line, field=case.id))
    return _capped(findings, "case changes")


# --------------------------------------------------------------------------- eval rows


def _rows(path: Path) -> dict[str, tuple[int, int, dict[str, Any]]]:
    """id -> (position, line, row) of a split; the first row of an id counts (the data check names duplicates)."""
    out: dict[str, tuple[int, int, dict[str, Any]]] = {}
    for line, row in read_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise InputError("a row needs a string 'id'", file=str(path), line=line, field="id")
        out.setdefault(row["id"], (len(out), line, row))
    return out


def _content(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "id"}


def eval_row_changes(old_path: Path, new_path: Path, gate_rows: int) -> list[Finding]:
    """Each row of the PR's eval split whose id differs from the base's: removed, renamed (same content,
    new id), added, edited under its id, and a reorder of the first `gate_rows` rows the gate scores."""
    if not new_path.is_file():
        return [Finding("this PR deletes the eval split the gate scores (ROUGE-L, token F1); " + NEEDS,
                        file=EVAL_SPLIT)]
    try:
        new = _rows(new_path)
    except InputError as exc:
        return [Finding(f"the PR's eval split does not read: {exc}", file=EVAL_SPLIT, line=exc.line, field=exc.field)]
    old = _rows(old_path)
    added = {i: v for i, v in new.items() if i not in old}
    findings = []
    for row_id, (_, old_line, row) in old.items():
        if row_id in new:
            _, line, head_row = new[row_id]
            fields = sorted(k for k in set(row) | set(head_row) if row.get(k) != head_row.get(k))
            if fields:
                findings.append(Finding(f"eval row {row_id}: this PR edits its {', '.join(fields)}, so main's score "
                                        f"for this id no longer measures the same row; {NEEDS}",
                                        file=EVAL_SPLIT, line=line, field=row_id))
            continue
        renamed = [i for i, (_, _, r) in added.items() if _content(r) == _content(row)]
        if renamed:
            added.pop(renamed[0])
            findings.append(Finding(f"eval row {row_id} is renamed to {renamed[0]} in this PR: every baseline compares "
                                    f"rows by id, so the row would no longer be compared; {NEEDS}",
                                    file=EVAL_SPLIT, line=new[renamed[0]][1], field=row_id))
        else:
            findings.append(Finding(f"eval row {row_id} (main's line {old_line}) is removed in this PR: its score "
                                    f"would no longer be compared; {NEEDS}", file=EVAL_SPLIT, field=row_id))
    for row_id, (_, line, _) in added.items():
        findings.append(Finding(f"eval row {row_id} is added in this PR: the eval split and its baselines change; "
                                f"{NEEDS}", file=EVAL_SPLIT, line=line, field=row_id))
    old_first = sorted(old, key=lambda i: old[i][0])[:gate_rows]
    new_first = sorted(new, key=lambda i: new[i][0])[:gate_rows]
    if not findings and old_first != new_first:
        findings.append(Finding(f"this PR reorders the eval split: the gate scores the first {gate_rows} rows, and "
                                f"they would be {', '.join(new_first[:5])}... instead of {', '.join(old_first[:5])}...; "
                                f"{NEEDS}", file=EVAL_SPLIT))
    return _capped(findings, "eval-row changes")


# --------------------------------------------------------------------------- the checks and the comment


def add_gate_change_checks(report: Report, changes: dict[str, list[Finding]], override: Override | None,
                           base: str) -> None:
    """One check per kind of gate change ("gate change: thresholds", ...). An error fails it unless
    `override` is given: then each is a warning marked OVERRIDDEN, and report.info["override"] lists them."""
    overridden = []
    for kind, findings in changes.items():
        errors = [f for f in findings if f.severity == "error"]
        if override is not None:
            for f in errors:
                overridden.append({"check": f"gate change: {kind}", "file": f.file, "line": f.line,
                                   "field": f.field, "message": f.message})
                f.severity = "warning"
                f.message = f"OVERRIDDEN by {override.by()}: {f.message}"
        summary = (f"unchanged from {base}" if not findings else
                   f"{len(errors)} changes accepted by {override.by()}" if override is not None and errors else
                   f"{len(errors)} changes to the gate; {NEEDS}")
        report.add_check(f"gate change: {kind}", findings, summary=summary)
    if override is not None:
        report.info["override"] = {"flag": "--allow-gate-changes", "reason": override.reason, "label": override.label,
                                   "overridden": overridden}


def _cell(text: Any) -> str:
    return html.escape(str(text)).replace("\n", " ")


def override_block(report: Report) -> str:
    """The lines report.md shows under its verdict about gate changes: the override, or how to get one."""
    record = report.info.get("override")
    if record is not None:
        by = f"the label `{_cell(record['label'])}`" if record.get("label") else "the command line (no label)"
        items = record.get("overridden") or []
        lines = [f"> ⚠️ **Gate overridden** by {by} (`llmops gate pr --allow-gate-changes`), reason: "
                 f"“{_cell(record['reason'])}”."]
        if not items:
            lines.append("> This PR changes no threshold, case or eval row: nothing was overridden.")
        else:
            many = len(items) != 1
            lines.append(f"> {len(items)} {'changes' if many else 'change'} to the gate itself would fail it and "
                         f"{'are' if many else 'is'} accepted as {'warnings' if many else 'a warning'} (the gate "
                         "still judges with main's thresholds, cases and eval split):")
            for item in items[:MAX_NAMED]:
                where = item["file"] or ""
                if item.get("line") is not None:
                    where += f":{item['line']}"
                message = str(item["message"]).replace(f", or {NEEDS}", "").replace(f"; {NEEDS}", "")
                lines.append(f"> - {_cell(item['check'])}: `{_cell(where)}` {_cell(message)}")
            if len(items) > MAX_NAMED:
                lines.append(f"> - … and {len(items) - MAX_NAMED} more (report.json, `info.override`)")
        return "\n".join(lines) + "\n"
    failing = [f for c in report.checks if c.name.startswith("gate change: ") and not c.passed for f in c.findings]
    if failing:
        return (f"> ❌ **This PR changes the gate itself** ({len(failing)} changes, under Findings): the gate judges "
                f"with main's thresholds, cases and eval split. To accept the changes, an eval owner "
                f"(.github/CODEOWNERS) adds the label `{OVERRIDE_LABEL}`.\n")
    return ""


def render_pr_markdown(report: Report, limit: int = GITHUB_COMMENT_LIMIT) -> str:
    """render_markdown with override_block right under the verdict line, within the comment limit."""
    block = override_block(report)
    if not block:
        return render_markdown(report, limit=limit)
    text = render_markdown(report, limit=limit - len(block) - 1)
    head, _, rest = text.partition("\n")  # the hidden marker stays first
    verdict, _, rest = rest.partition("\n")
    return f"{head}\n{verdict}\n\n{block}{rest}"
