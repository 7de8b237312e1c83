"""Shared fixtures. The offline switches are applied before any test imports a heavy library."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmops.settings import apply_offline_env

apply_offline_env()
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Workers started by tests skip the operating side (profiles load MiniLM); tests that need it ask.
os.environ.setdefault("LLMOPS_OPERATE", "0")
# Likewise the guards (they load MiniLM): tests/serving/test_guards.py and the wiring tests turn them on.
os.environ.setdefault("LLMOPS_GUARDS", "0")
# The tests use a local registry folder, or the MLflow server they start (test_registry_mlflow.py),
# never a shared one the developer's shell points at.
os.environ.pop("LLMOPS_REGISTRY_URI", None)

REPO_ROOT = Path(__file__).resolve().parents[1]


PIPELINE_REPO_PARTS = ("prompts", "datasets", "training/config.yaml", "pyproject.toml", "governance",
                       "evals/thresholds.yaml")


def copy_repo_parts(dest: Path, parts: tuple[str, ...] = PIPELINE_REPO_PARTS) -> Path:
    """A copy of these files and folders of the repository under `dest` (the pipeline tests' checkout)."""
    import shutil

    for rel in parts:
        src = REPO_ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def report_only_thresholds(path: Path) -> Path:
    """evals/thresholds.yaml with every floor and max_drop off, written to `path`: for micro models,
    which cannot meet the floors set from the real default model (tests of the machinery, not of
    model quality)."""
    import yaml

    data = yaml.safe_load((REPO_ROOT / "evals" / "thresholds.yaml").read_text())
    for section in ("suites", "metrics"):
        for gate in data[section].values():
            gate.update(min=None, max_drop=None)
    data["default_suite"].update(min=None, max_drop=None)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny LlamaForCausalLM + BPE tokenizer folder, built once per test session (~5 s)."""
    from training.micro import build_micro_model

    return build_micro_model(tmp_path_factory.mktemp("micro-model"))


CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="session")
def micro_chat_model(micro_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro model with a ChatML chat template (as SmolLM2 has), to test every chat-template path fast."""
    import shutil

    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("micro-chat")
    shutil.copytree(micro_model, out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(micro_model)
    tok.chat_template = CHATML
    tok.save_pretrained(out)
    return out


@pytest.fixture
def llmops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty local store (registry, models, runs) for one test."""
    home = tmp_path / "llmops-home"
    monkeypatch.setenv("LLMOPS_HOME", str(home))
    return home
