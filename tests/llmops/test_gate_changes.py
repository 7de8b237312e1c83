"""The PR gate's checks on changes to the gate itself (llmops/jobs/gate_changes.py), on copies of this
repo's thresholds, cases and eval split, without a model (tests/llmops/test_pr_gate.py runs the whole
gate on each of these changes).

    .venv/bin/pytest tests/llmops/test_gate_changes.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evals.rule_evals import load_cases
from llmops.errors import InputError
from llmops.jobs.gate_changes import (
    Override,
    add_gate_change_checks,
    case_changes,
    eval_row_changes,
    render_pr_markdown,
    threshold_changes,
)
from llmops.report import Finding, Report


@pytest.fixture
def thresholds(tmp_path: Path, repo_root: Path) -> tuple[Path, Path]:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    shutil.copy(repo_root / "evals" / "thresholds.yaml", old)
    shutil.copy(old, new)
    return old, new


def test_a_comment_edit_to_the_thresholds_is_no_change(thresholds: tuple[Path, Path]) -> None:
    old, new = thresholds
    new.write_text(new.read_text().replace("# Pass rate of each suite", "# The pass rate of each suite"))
    assert threshold_changes(old, new) == []


def test_each_threshold_change_is_named_loosened_or_tightened(thresholds: tuple[Path, Path]) -> None:
    old, new = thresholds
    new.write_text(new.read_text()
                   .replace("refusal: {min: 0.7, max_drop: 0.10}", "refusal: {min: 0.0, max_drop: 1.0}")
                   .replace("json_form: {min: 0.8, max_drop: 0.17}", "json_form: {min: 0.9, max_drop: 0.17}")
                   .replace("rouge1: {threshold: 0.20", "rouge1: {threshold: 0.10")
                   .replace("perplexity: {max: 14.0}", "perplexity: {max: 30.0}")
                   .replace("jailbreak: 0.9", "jailbreak: 0.5"))
    found = {f.field: f.message for f in threshold_changes(old, new)}
    assert set(found) == {"pass_rate.refusal", "pass_rate.json_form", "deepeval.rouge1.threshold",
                          "deepeval.perplexity.max", "safety.min_block_rate.jailbreak"}
    assert "loosens min 0.7 -> 0.0, loosens max_drop 0.1 -> 1.0" in found["pass_rate.refusal"]
    assert "tightens min 0.8 -> 0.9" in found["pass_rate.json_form"]
    assert "loosens it, 0.2 -> 0.1" in found["deepeval.rouge1.threshold"]
    assert "loosens it, 14.0 -> 30.0" in found["deepeval.perplexity.max"]
    assert "loosens it, 0.9 -> 0.5" in found["safety.min_block_rate.jailbreak"]
    assert all("eval-gate-change" in m for m in found.values())


def test_a_broken_thresholds_file_in_the_pr_is_a_finding(thresholds: tuple[Path, Path]) -> None:
    old, new = thresholds
    new.write_text(new.read_text().replace("suites:", "suitez:"))
    [finding] = threshold_changes(old, new)
    assert finding.severity == "error" and "suitez" in finding.message


def _case_dirs(tmp_path: Path, repo_root: Path) -> tuple[Path, Path]:
    base, head = tmp_path / "base", tmp_path / "head"
    for tree in (base, head):
        shutil.copytree(repo_root / "evals" / "cases", tree / "evals" / "cases")
        shutil.copytree(repo_root / "prompts", tree / "prompts")
    return base, head


def _cases(tree: Path):
    return load_cases(tree / "evals" / "cases", tree / "prompts")


def test_deleted_renamed_and_redefined_cases_are_named(tmp_path: Path, repo_root: Path) -> None:
    base, head = _case_dirs(tmp_path, repo_root)
    refusal = head / "evals" / "cases" / "refusal.yaml"
    text = refusal.read_text().replace("- id: refuse-recipe", "- id: refuse-pasta")
    text = text.replace("    question: Who won the 2018 FIFA World Cup?\n  assert:\n    - {type: must-refuse}",
                        "    question: Who won the 2018 FIFA World Cup?\n  assert:\n    - {type: contains, value: 'the'}")
    refusal.write_text(text)
    grounding = head / "evals" / "cases" / "grounding.yaml"
    first_id = _cases(base)[[c.file.endswith("grounding.yaml") for c in _cases(base)].index(True)].id
    kept = [block for block in grounding.read_text().split("\n- id: ") if not block.startswith(first_id + "\n")]
    grounding.write_text("\n- id: ".join(kept))
    found = {f.field: f.message for f in case_changes(_cases(base), _cases(head),
                                                     {"refuse-recipe": True, first_id: False}, (base, head))}
    assert set(found) == {"refuse-recipe", "refuse-sports", first_id}
    assert "renamed to refuse-pasta" in found["refuse-recipe"] and "passes on main" in found["refuse-recipe"]
    assert "deleted or renamed" in found[first_id] and "fails on main" in found[first_id]
    assert "edits its assert" in found["refuse-sports"] and "not measured" in found["refuse-sports"]


def test_unchanged_cases_are_no_change(tmp_path: Path, repo_root: Path) -> None:
    base, head = _case_dirs(tmp_path, repo_root)
    (head / "evals" / "cases" / "refusal.yaml").write_text(
        (head / "evals" / "cases" / "refusal.yaml").read_text().replace("Plain general-knowledge", "A general"))
    assert case_changes(_cases(base), _cases(head), {}, (base, head)) == []


@pytest.fixture
def splits(tmp_path: Path, repo_root: Path) -> tuple[Path, Path, list[dict]]:
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    shutil.copy(repo_root / "datasets" / "python-faq" / "eval.jsonl", old)
    rows = [json.loads(line) for line in old.read_text().splitlines() if line.strip()]
    return old, new, rows


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_eval_row_id_changes_are_named(splits: tuple[Path, Path, list[dict]]) -> None:
    old, new, rows = splits
    changed = [dict(r) for r in rows]
    changed[0]["id"] += "-renamed"
    removed = changed.pop(1)
    changed[2]["answer"] += " Edited."
    changed.append({"id": "contrib:new", "question": "What is PEP 8?", "answer": "A style guide."})
    _write(new, changed)
    found = {f.field: f for f in eval_row_changes(old, new, 16)}
    assert set(found) == {rows[0]["id"], removed["id"], rows[3]["id"], "contrib:new"}
    assert f"renamed to {rows[0]['id']}-renamed" in found[rows[0]["id"]].message and found[rows[0]["id"]].line == 1
    assert "removed" in found[removed["id"]].message
    assert "edits its answer" in found[rows[3]["id"]].message and found[rows[3]["id"]].line == 3
    assert "added" in found["contrib:new"].message
    assert all(f.severity == "error" for f in found.values())


def test_a_reorder_of_the_scored_rows_and_a_deleted_split_are_named(splits: tuple[Path, Path, list[dict]]) -> None:
    old, new, rows = splits
    _write(new, [rows[1], rows[0], *rows[2:]])
    [finding] = eval_row_changes(old, new, 16)
    assert "reorders" in finding.message
    _write(new, rows)
    assert eval_row_changes(old, new, 16) == []
    new.unlink()
    [finding] = eval_row_changes(old, new, 16)
    assert "deletes the eval split" in finding.message


def test_the_override_turns_errors_into_recorded_warnings_and_the_comment_says_so() -> None:
    def changes() -> dict[str, list[Finding]]:
        return {"thresholds": [Finding("pass_rate.refusal: this PR loosens min 0.7 -> 0.0", file="evals/thresholds.yaml",
                                       field="pass_rate.refusal")], "cases": [], "eval rows": []}

    plain = Report(kind="pr-gate")
    add_gate_change_checks(plain, changes(), None, "main")
    assert not plain.passed and "override" not in plain.info
    assert "changes the gate itself" in render_pr_markdown(plain)

    report = Report(kind="pr-gate")
    add_gate_change_checks(report, changes(), Override("owners approved", "eval-gate-change"), "main")
    assert report.passed
    [item] = report.info["override"]["overridden"]
    assert item["message"] == "pass_rate.refusal: this PR loosens min 0.7 -> 0.0"
    md = render_pr_markdown(report)
    lines = md.splitlines()
    assert lines[0] == "<!-- llmops-eval-report -->" and "**PASS**" in lines[1]
    assert "Gate overridden** by the label `eval-gate-change`" in lines[3] and "owners approved" in lines[3]
    assert "pass_rate.refusal: this PR loosens min 0.7 -&gt; 0.0" in md.split("| check |")[0]

    nothing = Report(kind="pr-gate")
    add_gate_change_checks(nothing, {"thresholds": [], "cases": [], "eval rows": []}, Override("x", "eval-gate-change"),
                           "main")
    assert "nothing was overridden" in render_pr_markdown(nothing)


@pytest.mark.parametrize("reason, label", [("  ", None), ("ok", " ")])
def test_an_override_needs_a_reason_and_a_named_label(reason: str, label: str | None) -> None:
    with pytest.raises(InputError):
        Override(reason, label)
