"""The release and rollback workflows: triggers, the production environment, the shared
concurrency group, the dispatch inputs, and no expression interpolated into a shell script.

    .venv/bin/pytest tests/workflows/test_release_workflows.py -q
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

# `${{ ... }}` whose expression reads something a pusher or dispatcher controls.
UNTRUSTED = re.compile(r"\$\{\{[^}]*\b(github\.event\.inputs\.|inputs\.|github\.ref_name|github\.ref\b|"
                       r"github\.head_ref|github\.event\.)[^}]*\}\}")


def _load(path: Path) -> dict:
    # PyYAML (YAML 1.1) reads the key `on` as True; map it back.
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


@pytest.fixture(scope="module")
def release(repo_root: Path) -> dict:
    return _load(repo_root / ".github" / "workflows" / "release.yml")


@pytest.fixture(scope="module")
def rollback(repo_root: Path) -> dict:
    return _load(repo_root / ".github" / "workflows" / "rollback.yml")


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _run_scripts(workflow: dict) -> list[str]:
    return [step["run"] for step in _steps(workflow) if "run" in step]


def injected_expressions(workflow: dict) -> list[str]:
    """Untrusted `${{ }}` expressions written directly inside a `run:` script."""
    return [m.group(0) for script in _run_scripts(workflow) for m in UNTRUSTED.finditer(script)]


def test_release_runs_on_version_tags_only(release: dict) -> None:
    assert release["on"] == {"push": {"tags": ["v*"]}}


def test_rollback_is_dispatched_with_to_and_reason(rollback: dict) -> None:
    assert set(rollback["on"]) == {"workflow_dispatch"}
    inputs = rollback["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"to", "reason"}
    assert inputs["reason"]["required"] is True
    assert inputs["to"]["required"] is False


@pytest.mark.parametrize("name", ["release", "rollback"])
def test_jobs_use_the_production_environment_on_self_hosted_runners(name: str, request) -> None:
    workflow = request.getfixturevalue(name)
    for job_name, job in workflow["jobs"].items():
        environment = job.get("environment")
        env_name = environment["name"] if isinstance(environment, dict) else environment
        assert env_name == "production", f"{name}.yml job {job_name} is not gated by the production environment"
        assert "self-hosted" in job["runs-on"], job["runs-on"]


def test_release_and_rollback_share_one_uncancellable_concurrency_group(release: dict, rollback: dict) -> None:
    assert release["concurrency"]["group"] == rollback["concurrency"]["group"]
    # A literal group: an expression (e.g. with the ref) would let a release and a rollback run at once.
    assert "${{" not in release["concurrency"]["group"]
    assert release["concurrency"]["cancel-in-progress"] is False
    assert rollback["concurrency"]["cancel-in-progress"] is False


def test_release_calls_llmops_release_with_the_tag_from_env(release: dict) -> None:
    step = next(s for s in _steps(release) if "llmops release" in s.get("run", ""))
    assert step["env"]["VERSION"] == "${{ github.ref_name }}"
    assert '"$VERSION"' in step["run"]
    assert step["env"]["LLMOPS_API_KEY"] == "${{ secrets.LLMOPS_API_KEY }}"
    assert any(s.get("run") == "bash scripts/install.sh" for s in _steps(release))
    assert any(s.get("uses", "").startswith("actions/checkout@") for s in _steps(release))
    upload = next(s for s in _steps(release) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()", "the report must be uploaded when the release fails (it says why)"
    collect = next(s for s in _steps(release) if "last_analysis.json" in s.get("run", ""))
    assert collect["if"] == "always()"
    assert f"mkdir -p {upload['with']['path']}" in collect["run"]


def test_rollback_passes_reason_and_optional_to_through_env(rollback: dict) -> None:
    step = next(s for s in _steps(rollback) if "llmops rollback" in s.get("run", ""))
    assert step["env"]["REASON"] == "${{ inputs.reason }}"
    assert step["env"]["TO"] == "${{ inputs.to }}"
    assert step["env"]["LLMOPS_API_KEY"] == "${{ secrets.LLMOPS_API_KEY }}"
    assert '--reason "$REASON"' in step["run"]
    assert '--to "$TO"' in step["run"] and '[ -n "$TO" ]' in step["run"]


def _options(command) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def test_the_flags_the_workflows_pass_exist_on_the_commands(release: dict, rollback: dict) -> None:
    from llmops.cli.release import release as release_cmd
    from llmops.cli.release import rollback as rollback_cmd
    from llmops.cli.release import status as status_cmd

    commands = {"release": release_cmd, "rollback": rollback_cmd, "status": status_cmd}
    for script in _run_scripts(release) + _run_scripts(rollback):
        called = set(re.findall(r"llmops (\w+)", script))
        if not called:
            continue
        # One llmops command per step (the workflows stay thin), so every --flag in it is that command's.
        assert len(called) == 1 and called <= set(commands), script
        accepted = _options(commands[called.pop()])
        passed = set(re.findall(r"(?<![\w-])--[a-z][-a-z]*", script))
        assert passed <= accepted, f"{sorted(passed - accepted)} not accepted, in: {script}"


@pytest.mark.parametrize("name", ["release", "rollback"])
def test_no_untrusted_expression_inside_a_run_script(name: str, request) -> None:
    assert injected_expressions(request.getfixturevalue(name)) == []


def test_the_injection_check_catches_inline_interpolation() -> None:
    workflow = {"jobs": {"a": {"steps": [
        {"run": 'llmops release "${{ github.ref_name }}"'},
        {"run": "llmops rollback --reason '${{ github.event.inputs.reason }}'"},
        {"run": "llmops rollback --to ${{ inputs.to }}"},
        {"run": "echo ${{ secrets.TOKEN }} ${{ steps.x.outputs.y }}"},
    ]}}}
    assert injected_expressions(workflow) == [
        "${{ github.ref_name }}", "${{ github.event.inputs.reason }}", "${{ inputs.to }}"]


def test_custom_runner_labels_are_declared_for_actionlint(repo_root: Path, release: dict, rollback: dict) -> None:
    config = yaml.safe_load((repo_root / ".github" / "actionlint.yaml").read_text(encoding="utf-8"))
    declared = set(config["self-hosted-runner"]["labels"])
    builtin = {"self-hosted", "linux", "x64", "arm64", "windows", "macos"}
    for workflow in (release, rollback):
        for job in workflow["jobs"].values():
            assert set(job["runs-on"]) - builtin <= declared
