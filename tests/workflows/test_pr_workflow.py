"""The pull-request workflow: the `eval-gate-change` label, and only it, passes the override to
`llmops gate pr`, the label re-runs the gate, and CODEOWNERS makes the eval owners review every path
whose change needs that label.

    .venv/bin/pytest tests/workflows/test_pr_workflow.py -q

The Gate step's own shell script runs here, with a stand-in `.venv/bin/llmops` that records its
arguments and exits with each code the command documents.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from llmops.jobs.gate_changes import EVAL_SPLIT, OVERRIDE_LABEL, THRESHOLDS

REPO = Path(__file__).resolve().parents[2]
PR_YML = REPO / ".github" / "workflows" / "pr.yml"
LABEL_EXPRESSION = (f"${{{{ contains(github.event.pull_request.labels.*.name, '{OVERRIDE_LABEL}') "
                    f"&& '{OVERRIDE_LABEL}' || '' }}}}")


def _workflow() -> dict:
    doc = yaml.safe_load(PR_YML.read_text(encoding="utf-8"))
    if True in doc:  # PyYAML (YAML 1.1) reads the key `on` as True
        doc["on"] = doc.pop(True)
    return doc


def _gate_step() -> dict:
    steps = _workflow()["jobs"]["gate"]["steps"]
    return next(s for s in steps if s.get("id") == "gate")


def _run_gate_step(tmp_path: Path, label: str, code: int = 0) -> tuple[list[str], str]:
    """The step's script with the env GitHub gives it; returns llmops's argv and the step output."""
    fake = tmp_path / ".venv" / "bin" / "llmops"
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{tmp_path}/argv"\nexit {code}\n')
    fake.chmod(0o755)
    output = tmp_path / "output"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GITHUB_OUTPUT": str(output), "BASE_REF": "main",
           "GATE_CHANGE_LABEL": label, "PR_NUMBER": "42"}
    done = subprocess.run(["bash", "-e", "-c", _gate_step()["run"]], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr  # the step records the exit; a later step fails the job
    return (tmp_path / "argv").read_text().splitlines(), output.read_text().strip()


def test_the_label_maps_to_the_override_flag(tmp_path: Path) -> None:
    step = _gate_step()
    assert step["env"]["GATE_CHANGE_LABEL"] == LABEL_EXPRESSION
    assert "${{" not in step["run"], "expressions reach the script through env only"
    argv, output = _run_gate_step(tmp_path, OVERRIDE_LABEL)
    assert argv[:2] == ["gate", "pr"]
    assert argv[argv.index("--base") + 1] == "origin/main"
    reason = argv[argv.index("--allow-gate-changes") + 1]
    assert OVERRIDE_LABEL in reason and "#42" in reason
    assert argv[argv.index("--override-label") + 1] == OVERRIDE_LABEL
    assert output == "exit=0"


@pytest.mark.parametrize("code", [1, 2])
def test_without_the_label_no_override_is_passed_and_the_exit_is_kept(tmp_path: Path, code: int) -> None:
    argv, output = _run_gate_step(tmp_path, "", code)
    assert "--allow-gate-changes" not in argv and "--override-label" not in argv
    assert argv[:2] == ["gate", "pr"]
    assert output == f"exit={code}"
    last = _workflow()["jobs"]["gate"]["steps"][-1]
    assert last["if"] == "steps.gate.outputs.exit != '0'" and "exit 1" in last["run"]


def test_the_flags_the_gate_step_passes_exist_on_the_command(tmp_path: Path) -> None:
    from llmops.cli.gate import pr

    accepted = {opt for param in pr.params for opt in getattr(param, "opts", [])}
    argv, _ = _run_gate_step(tmp_path, OVERRIDE_LABEL)
    assert {a for a in argv if a.startswith("--")} <= accepted


def test_adding_or_removing_the_label_reruns_the_gate() -> None:
    workflow = _workflow()
    types = workflow["on"]["pull_request"]["types"]
    assert {"opened", "synchronize", "reopened", "labeled", "unlabeled"} <= set(types)
    # A job skipped by an `if` reports a passed check: the gate job must always run.
    assert "if" not in workflow["jobs"]["gate"]


def _matches(pattern: str, path: str) -> bool:
    """GitHub's CODEOWNERS matching for the patterns this repo uses: `*` (everything), `/a/b` (anchored),
    `/a/` (a folder and everything under it), `*` within one path segment."""
    if pattern == "*":
        return True
    folder = pattern.endswith("/")
    pat, parts = pattern.strip("/").split("/"), path.split("/")
    if len(parts) < len(pat) or (not folder and len(parts) != len(pat)):
        return False
    return all(fnmatch.fnmatchcase(part, want) for part, want in zip(parts[:len(pat)], pat, strict=True))


def codeowners_of(path: str, text: str) -> list[str]:
    """The owners of `path`: the last matching pattern wins."""
    owners: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            pattern, *names = line.split()
            assert pattern == "*" or pattern.startswith("/"), f"unanchored pattern {pattern!r}: extend _matches"
            if _matches(pattern, path):
                owners = names
    return owners


def test_codeowners_puts_what_the_override_accepts_under_the_eval_owners() -> None:
    text = (REPO / ".github" / "CODEOWNERS").read_text(encoding="utf-8")
    # Any one owner on a line may approve: the eval owners must be the only ones, or their review is optional.
    for path in (THRESHOLDS, "evals/cases/refusal.yaml", "evals/cases/new_suite.yml", EVAL_SPLIT,
                 "datasets/safety-detector/eval.jsonl"):
        assert codeowners_of(path, text) == ["@llmops/eval-owners"], path
    # The other entries stay.
    assert codeowners_of("datasets/python-faq/train.jsonl", text) == ["@llmops/data-stewards"]
    assert codeowners_of("prompts/answer.yaml", text) == ["@llmops/prompt-owners"]
    assert codeowners_of(".github/CODEOWNERS", text) == ["@llmops/governance"]
    assert codeowners_of("README.md", text) == ["@llmops/maintainers"]


def test_the_codeowners_reader_catches_a_shared_line() -> None:
    shared = "*  @llmops/maintainers\n/evals/cases/  @llmops/eval-owners @llmops/maintainers\n"
    assert codeowners_of("evals/cases/refusal.yaml", shared) != ["@llmops/eval-owners"]
    later = "/evals/cases/  @llmops/eval-owners\n/evals/  @llmops/maintainers\n"
    assert codeowners_of("evals/cases/refusal.yaml", later) == ["@llmops/maintainers"]
