"""The committed default adapter (tests/data/default-adapter/) stands in for a LoRA run only while its key
matches: the key must change with everything that decides the training, and a damaged file is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, copy_repo_parts
from tests.default_adapter import COMMITTED, committed_adapter, save, training_key
from training.config import load_config


def train_deps() -> tuple[str, ...]:
    spec = yaml.safe_load((REPO_ROOT / "pipeline.yaml").read_text())
    return tuple(spec["pipelines"]["main"]["stages"]["train"]["deps"])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    parts = {"pipeline.yaml", "constraints.txt", "training/config.yaml", "datasets", "prompts", *train_deps(),
             str(COMMITTED.relative_to(REPO_ROOT))}
    top = [rel for rel in parts if not any(rel.startswith(other + "/") for other in parts)]  # no part twice
    return copy_repo_parts(tmp_path / "repo", tuple(sorted(top)))


def touch(path: Path, text: str = "\n") -> None:
    path.write_text(path.read_text() + text)


def test_the_committed_adapter_was_trained_on_todays_inputs() -> None:
    """The suite stays fast only while this holds: after a change to the recipe, its data or its code,
    retrain and save (tests/default_adapter.py says how)."""
    folder, why = committed_adapter()
    assert folder == COMMITTED, why
    meta = json.loads((COMMITTED / "key.json").read_text())
    assert meta["metrics"]["trainable_parameters"] > 0 and meta["metrics"]["steps"] > 0


@pytest.mark.parametrize("rel", ["datasets/python-faq/train.jsonl",
                                 "datasets/assistant-contract/train.jsonl", "prompts/answer.yaml",
                                 "training/finetune.py", "training/tokenise.py", "training/base_models.py",
                                 "llmops/prompts.py", "constraints.txt"])
def test_the_key_changes_with_what_decides_the_training(repo: Path, rel: str) -> None:
    first = training_key(repo)
    assert committed_adapter(repo)[0] is not None
    touch(repo / rel, "\n# changed\n" if rel.endswith((".py", ".yaml", ".txt")) else "\n")
    assert training_key(repo) != first
    folder, why = committed_adapter(repo)
    assert folder is None and "other inputs" in why


def test_a_config_value_changes_the_key_but_files_that_do_not_decide_the_weights_do_not(repo: Path) -> None:
    first = training_key(repo)
    config = repo / "training" / "config.yaml"
    config.write_text(config.read_text().replace("learning_rate: 0.0006", "learning_rate: 0.0003"))
    assert training_key(repo)["config"] != first["config"]
    config.write_text(config.read_text().replace("learning_rate: 0.0003", "learning_rate: 0.0006"))
    assert training_key(repo) == first
    (repo / "datasets" / "README-extra.md").write_text("not read by training\n")
    assert training_key(repo) == first
    for plumbing in ("llmops/settings.py", "llmops/files.py", "llmops/report.py"):  # leave every weight as it was
        touch(repo / plumbing, "\n# changed\n")
    assert training_key(repo) == first and committed_adapter(repo)[0] is not None


def test_a_damaged_adapter_file_is_refused(repo: Path) -> None:
    weights = repo / COMMITTED.relative_to(REPO_ROOT) / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    folder, why = committed_adapter(repo)
    assert folder is None and "sha256" in why


def test_save_refuses_a_run_with_another_recipe(repo: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copyfile(repo / COMMITTED.relative_to(REPO_ROOT) / name, run / "adapter" / name)
    (run / "metrics.json").write_text(json.dumps({"steps": 1}))
    config = load_config(repo / "training" / "config.yaml").model_dump(mode="json")
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "epochs": 1.0, "_resolved": {}}))
    with pytest.raises(SystemExit, match="not training/config.yaml's recipe"):
        save(run, repo)
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "_resolved": {}}))
    folder = save(run, repo)
    assert committed_adapter(repo)[0] == folder
