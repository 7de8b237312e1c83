"""The nightly workflow shows each check's outcome; an inconclusive drift report (exit 3) is not a pass.

    .venv/bin/pytest tests/workflows/test_nightly.py -q

The drift step's own shell script runs here with `llmops monitor report` standing in as a process
that exits with each code the command documents.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

NIGHTLY = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "nightly.yml"
COMMAND = ".venv/bin/llmops monitor report --out reports/drift"


def _steps() -> dict[str, dict]:
    steps = yaml.safe_load(NIGHTLY.read_text())["jobs"]["operate"]["steps"]
    return {s.get("id") or s.get("name") or s.get("uses", ""): s for s in steps}


@pytest.mark.parametrize(("code", "result"), [(0, "pass"), (1, "drift"), (3, "inconclusive"), (2, "error (exit 2)")])
def test_drift_step_fails_on_inconclusive_and_names_it(tmp_path: Path, code: int, result: str) -> None:
    step = _steps()["drift"]
    assert COMMAND in step["run"] and step["continue-on-error"] is True
    output = tmp_path / "output"
    script = step["run"].replace(COMMAND, f"bash -c 'exit {code}'")
    done = subprocess.run(["bash", "-e", "-c", script], env={"GITHUB_OUTPUT": str(output), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == code  # non-zero: the step's outcome is failure
    assert output.read_text().strip() == f"result={result}"


def test_the_last_step_fails_the_run_on_any_failed_check_and_shows_each() -> None:
    steps = _steps()
    last = steps["Fail when a check failed or was inconclusive"]
    for step in ("drift", "data", "audit", "eval"):
        assert f"steps.{step}.outcome == 'failure'" in last["if"]
    assert "steps.drift.outputs.result" in last["env"]["DRIFT"]
    assert "--against production" in steps["eval"]["run"]
