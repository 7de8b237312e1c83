"""A copy of this repo as a git repo on `main` with a committed baseline, and branches of it, for
the gate-integrity tests (tests/llmops/test_pr_gate.py on a micro model, tests/test_real_model.py
on the real default model)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from llmops.cli import main

IDENT = ["-c", "user.email=t@t", "-c", "user.name=t"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *IDENT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def repo_with_baseline(repo: Path, repo_root: Path, model: Path) -> Path:
    """Copy the working tree into `repo`, commit it on main, make main's baseline with `model`, commit."""
    files = git(repo_root, "ls-files", "--cached", "--others", "--exclude-standard").split("\n")
    for rel in filter(None, files):
        if (repo_root / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / rel, repo / rel)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "main")
    with pytest.MonkeyPatch.context() as mp:  # `llmops gate baseline` run in that repo, for this call only
        mp.setenv("LLMOPS_ROOT", str(repo))
        mp.setenv("LLMOPS_HOME", str(repo.parent / "home"))
        assert main(["gate", "baseline", "--model", str(model)]) == 0
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline")
    return repo


def pr_branch(main_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh clone of main on a `pr` branch; the gate's result cache (main's home) is shared.
    The test's `llmops gate pr` calls (run_gate) run in it: LLMOPS_ROOT/LLMOPS_HOME are set for the test."""
    repo = tmp_path / "repo"
    shutil.copytree(main_repo, repo)
    git(repo, "checkout", "-q", "-b", "pr")
    monkeypatch.setenv("LLMOPS_ROOT", str(repo))
    monkeypatch.setenv("LLMOPS_HOME", str(main_repo.parent / "home"))
    return repo


def run_gate(repo: Path, model: Path, *extra: str) -> tuple[int, dict]:
    code = main(["gate", "pr", "--base", "main", "--model", str(model), "--out", str(repo / "out"), *extra])
    return code, json.loads((repo / "out" / "report.json").read_text())


def failed(report: dict) -> dict[str, list[dict]]:
    return {c["name"]: c["findings"] for c in report["checks"] if not c["passed"]}
