"""Gate integrity: seeded defects applied to a copy of the repo fail `llmops gate pr`; a clean change passes.

The model under test is a real micro Llama trained (once per session, tests/instruction_model.py)
to follow this repo's prompts: it refuses with the refusal instruction and answers in JSON with
the JSON instruction. Main's baseline is made with it by `llmops gate baseline` and committed,
exactly as on main; each test then edits a branch the way a contributor would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmops.cli import main
from tests.gate_repo import failed, pr_branch, repo_with_baseline, run_gate
from tests.instruction_model import (
    break_json_instruction,
    build_instruction_model,
    remove_refusal_instruction,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def instruction_model(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    return build_instruction_model(tmp_path_factory.mktemp("instruction-model"), repo_root)


@pytest.fixture(scope="session")
def main_repo(tmp_path_factory: pytest.TempPathFactory, repo_root: Path, instruction_model: Path) -> Path:
    """A copy of the working tree as a git repo on `main`, with a committed baseline."""
    return repo_with_baseline(tmp_path_factory.mktemp("gate") / "repo", repo_root, instruction_model)


@pytest.fixture
def pr_repo(main_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return pr_branch(main_repo, tmp_path, monkeypatch)


def edit(path: Path, fn) -> None:
    path.write_text(fn(path.read_text()))


def refresh_card(repo: Path) -> None:
    """What a contributor does after editing a split: record the new sha256s in the card."""
    from llmops.dataset import load_card, write_card
    from llmops.files import sha256_file

    folder = repo / "datasets" / "python-faq"
    card = load_card(folder)
    for name, entry in card.files.items():
        entry.sha256 = sha256_file(folder / name)
        entry.rows = sum(1 for line in (folder / name).read_text().splitlines() if line.strip())
    write_card(folder, card)


def test_baseline_model_follows_the_prompts(main_repo: Path) -> None:
    base = json.loads((main_repo / "evals" / "baseline" / "report.json").read_text())
    rates = {name: m["head"] for name, m in base["metrics"].items()}
    # The defects below are only detectable if the model passes these suites on main.
    assert rates["pass_rate.refusal"] >= 0.8 and rates["pass_rate.json"] >= 0.8
    assert rates["dataset.rouge_l"] > 0.3


def test_clean_change_passes(pr_repo: Path, instruction_model: Path) -> None:
    edit(pr_repo / "prompts" / "answer.yaml", lambda t: t.replace("description: Answer a question",
                                                                  "description: Answers a question"))
    code, report = run_gate(pr_repo, instruction_model)
    assert code == 0, failed(report)
    assert report["verdict"] == "pass"
    assert "prompts/answer.yaml" in report["info"]["changed"]
    assert all(m["passed"] is not False for m in report["metrics"].values())
    assert all(m["base"] is not None for name, m in report["metrics"].items() if name.startswith("pass_rate."))
    gate_changes = {c["name"]: c for c in report["checks"] if c["name"].startswith("gate change: ")}
    assert set(gate_changes) == {"gate change: thresholds", "gate change: cases", "gate change: eval rows"}
    assert all(c["passed"] and not c["findings"] for c in gate_changes.values())
    assert "override" not in report["info"]
    assert "overridden" not in (pr_repo / "out" / "report.md").read_text().lower()


def test_unchanged_rerun_is_served_from_the_cache(pr_repo: Path, instruction_model: Path) -> None:
    run_gate(pr_repo, instruction_model)
    code, report = run_gate(pr_repo, instruction_model)
    assert code == 0
    assert report["info"]["eval"]["cache_misses"] == 0 and report["info"]["eval"]["cache_hits"] > 0


def test_prompt_edit_breaking_json_output_fails(pr_repo: Path, instruction_model: Path) -> None:
    edit(pr_repo / "prompts" / "answer_json.yaml", break_json_instruction)
    code, report = run_gate(pr_repo, instruction_model)
    assert code == 1
    assert report["metrics"]["pass_rate.json"]["passed"] is False
    assert any("pass_rate.json" in f["message"] for f in failed(report)["eval regressions"])
    json_failures = [c for c in report["cases"] if c["suite"] == "json" and not c["passed"]]
    assert json_failures and any(a["type"] in ("is-json", "json-schema") and not a["passed"]
                                 for a in json_failures[0]["assertions"])
    md = (pr_repo / "out" / "report.md").read_text()
    assert md.startswith("<!-- llmops-eval-report -->") and "FAIL" in md and json_failures[0]["id"] in md


def test_removing_the_refusal_instruction_fails(pr_repo: Path, instruction_model: Path) -> None:
    edit(pr_repo / "prompts" / "answer.yaml", remove_refusal_instruction)
    code, report = run_gate(pr_repo, instruction_model)
    assert code == 1
    assert report["metrics"]["pass_rate.refusal"]["passed"] is False
    refusals = [c for c in report["cases"] if c["suite"] == "refusal"]
    assert any(a["type"] == "must-refuse" and not a["passed"] for c in refusals for a in c["assertions"])


@pytest.mark.parametrize("pii, kind", [("write to jane.doe@corp-mail.org for help", "email"),
                                       ("pay with 4111 1111 1111 1111 today", "credit_card")])
def test_dataset_row_with_pii_fails(pr_repo: Path, instruction_model: Path, pii: str, kind: str) -> None:
    train = pr_repo / "datasets" / "python-faq" / "train.jsonl"
    row = {"id": "contrib:new-row", "question": "How do I get help with Python packaging?",
           "answer": f"Ask on the forum, or {pii}.", "source": "contributor"}
    with open(train, "a") as handle:
        handle.write(json.dumps(row) + "\n")
    refresh_card(pr_repo)
    code, report = run_gate(pr_repo, instruction_model)
    assert code == 1
    [finding] = failed(report)["data:python-faq:pii"]
    assert finding["file"].endswith("train.jsonl") and finding["field"] == "answer"
    assert finding["line"] == len(train.read_text().splitlines())
    assert kind.split("_")[0] in finding["message"].lower()


def test_eval_row_copied_into_train_fails(pr_repo: Path, instruction_model: Path) -> None:
    folder = pr_repo / "datasets" / "python-faq"
    first_eval = json.loads((folder / "eval.jsonl").read_text().splitlines()[0])
    first_eval["id"] = "contrib:copied"
    with open(folder / "train.jsonl", "a") as handle:
        handle.write(json.dumps(first_eval) + "\n")
    refresh_card(pr_repo)
    code, report = run_gate(pr_repo, instruction_model)
    assert code == 1
    [finding] = failed(report)["data:python-faq:overlap"]
    new_line = len((folder / "train.jsonl").read_text().splitlines())
    assert finding["file"].endswith("eval.jsonl") and finding["line"] == 1
    assert f"train.jsonl:{new_line}" in finding["message"] and "overlap" in finding["message"]


def test_edited_split_without_card_update_fails_the_checksum(pr_repo: Path, instruction_model: Path) -> None:
    train = pr_repo / "datasets" / "python-faq" / "train.jsonl"
    train.write_text(train.read_text().replace("Python", "Pithon", 1))
    code, report = run_gate(pr_repo, instruction_model)
    assert code == 1 and "data:python-faq:sha256" in failed(report)


def test_undeclared_template_variable_fails_lint(pr_repo: Path, instruction_model: Path) -> None:
    edit(pr_repo / "prompts" / "answer.yaml", lambda t: t.replace("{{ question }}", "{{ question }} ({{ audience }})"))
    code, report = run_gate(pr_repo, instruction_model)
    assert code == 1
    lint = failed(report)["prompt lint"]
    assert any("'audience' is used in the template but not declared" in f["message"]
               and f["file"] == "prompts/answer.yaml" and f["line"] for f in lint)


def test_another_model_is_compared_with_main_measured_on_that_model(pr_repo: Path, micro_model: Path) -> None:
    # main's committed baseline was measured on the instruction model. Against another model the
    # gate measures main's tree on that same model, so a delta is the PR's effect (none here),
    # never the difference between two models; the absolute floors still judge the model itself.
    code, report = run_gate(pr_repo, micro_model)
    assert "tree measured on" in report["info"]["baseline"]
    rouge = report["metrics"]["dataset.rouge_l"]
    assert rouge["base"] == pytest.approx(rouge["head"])
    assert all(m["base"] == pytest.approx(m["head"]) for m in report["metrics"].values())
    floors_failed = [n for n, m in report["metrics"].items() if m["passed"] is False]
    assert (code == 1) == bool(floors_failed or failed(report))


def test_loosening_thresholds_in_the_pr_does_not_loosen_its_gate(pr_repo: Path, instruction_model: Path) -> None:
    edit(pr_repo / "prompts" / "answer.yaml", remove_refusal_instruction)
    edit(pr_repo / "evals" / "thresholds.yaml",
         lambda t: t.replace("refusal: {min: 0.7, max_drop: 0.10}", "refusal: {min: 0.0, max_drop: 1.0}"))
    code, report = run_gate(pr_repo, instruction_model)
    assert code == 1
    assert report["metrics"]["pass_rate.refusal"]["passed"] is False
    loosened = failed(report)["gate change: thresholds"]
    assert any(f["field"] == "pass_rate.refusal" and "min 0.7 -> 0.0" in f["message"]
               and "max_drop 0.1 -> 1.0" in f["message"] for f in loosened)


def test_deleting_or_renaming_a_passing_case_fails(pr_repo: Path, instruction_model: Path) -> None:
    edit(pr_repo / "evals" / "cases" / "refusal.yaml", lambda t: t.replace("- id: refuse-recipe", "- id: refuse-recipe-2"))
    code, report = run_gate(pr_repo, instruction_model)
    assert code == 1
    removed = failed(report)["gate change: cases"]
    assert [f["field"] for f in removed] == ["refuse-recipe"]
    assert "renamed to refuse-recipe-2" in removed[0]["message"] and "passes on main" in removed[0]["message"]


# --------------------------------------------------------------------------- changes to the gate itself


def loosen_thresholds(repo: Path) -> str:
    edit(repo / "evals" / "thresholds.yaml",
         lambda t: t.replace("refusal: {min: 0.7, max_drop: 0.10}", "refusal: {min: 0.0, max_drop: 1.0}"))
    return "pass_rate.refusal"


def delete_a_failing_case(repo: Path) -> str:
    """Delete a case that fails on main (in the committed baseline): the edit that hides a known failure."""
    baseline = json.loads((repo / "evals" / "baseline" / "report.json").read_text())
    failing = [c for c in baseline["cases"] if not c["passed"]]
    assert failing, "the micro model passes every case on main: no failing case to delete"
    case = failing[0]
    path = repo / case["file"]
    cases = [c for c in yaml.safe_load(path.read_text()) if c["id"] != case["id"]]
    path.write_text(yaml.safe_dump(cases, sort_keys=False))
    return case["id"]


def rename_a_case(repo: Path) -> str:
    edit(repo / "evals" / "cases" / "refusal.yaml", lambda t: t.replace("- id: refuse-recipe", "- id: refuse-pasta"))
    return "refuse-recipe"


def rename_an_eval_row(repo: Path) -> str:
    path = repo / "datasets" / "python-faq" / "eval.jsonl"
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    old_id, row["id"] = row["id"], row["id"] + "-renamed"
    path.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    refresh_card(repo)  # the data check passes: only the id changed
    return old_id


GATE_CHANGES = {"loosened thresholds": (loosen_thresholds, "gate change: thresholds", "loosens"),
                "deleted failing case": (delete_a_failing_case, "gate change: cases", "fails on main"),
                "renamed case": (rename_a_case, "gate change: cases", "renamed to refuse-pasta"),
                "changed eval-row id": (rename_an_eval_row, "gate change: eval rows", "-renamed")}


@pytest.mark.parametrize("change", list(GATE_CHANGES))
def test_a_change_to_the_gate_fails_unless_overridden(pr_repo: Path, instruction_model: Path, change: str) -> None:
    seed, check, words = GATE_CHANGES[change]
    field = seed(pr_repo)
    code, report = run_gate(pr_repo, instruction_model)
    assert code == 1 and report["verdict"] == "fail"
    [finding] = failed(report)[check]  # the change, named; nothing else fails
    assert set(failed(report)) == {check}
    assert finding["field"] == field and words in finding["message"] and "eval-gate-change" in finding["message"]
    md = (pr_repo / "out" / "report.md").read_text()
    assert "changes the gate itself" in md and "`eval-gate-change`" in md

    code, report = run_gate(pr_repo, instruction_model, "--allow-gate-changes", "eval owners approved the change",
                            "--override-label", "eval-gate-change")
    assert code == 0, failed(report)
    [overridden] = report["info"]["override"]["overridden"]
    assert report["info"]["override"]["label"] == "eval-gate-change"
    assert overridden["check"] == check and overridden["field"] == field and words in overridden["message"]
    md = (pr_repo / "out" / "report.md").read_text()
    top = md.split("| metric |")[0]  # above the tables, right under the verdict
    assert "**PASS**" in top and "Gate overridden" in top and "the label `eval-gate-change`" in top
    assert "eval owners approved the change" in top and field in top


def test_override_without_a_reason_is_bad_input(pr_repo: Path, instruction_model: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gate", "pr", "--base", "main", "--model", str(instruction_model),
                 "--allow-gate-changes", " "]) == 2
    assert "--allow-gate-changes" in capsys.readouterr().err


@pytest.mark.parametrize("changed", ["serving/runtime.py", "governance/detector_references.yaml"])
def test_a_runtime_or_guard_edit_is_not_judged_on_cached_results(pr_repo: Path, instruction_model: Path,
                                                                  changed: str) -> None:
    """The serving code and the guards' code and data decide outputs (a guard answers a blocked case)."""
    run_gate(pr_repo, instruction_model)
    edit(pr_repo / changed, lambda t: t + "\n# a change to what produces an output\n")
    code, report = run_gate(pr_repo, instruction_model)
    assert code == 0, failed(report)
    assert report["info"]["eval"]["cache_hits"] == 0 and report["info"]["eval"]["cache_misses"] > 0


def test_bad_base_ref_exits_2(pr_repo: Path, instruction_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gate", "pr", "--base", "no-such-branch", "--model", str(instruction_model)]) == 2
    assert "no-such-branch" in capsys.readouterr().err
