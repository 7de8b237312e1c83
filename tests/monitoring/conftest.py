"""Fixtures of the monitoring tests: the training-data profile is built once per session (~15 s)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def monitor_home(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    """A store whose reference profile of datasets/python-faq/train.jsonl is already cached."""
    from serving.monitoring.drift import training_profile

    home = tmp_path_factory.mktemp("monitor-home")
    training_profile(repo_root / "datasets/python-faq/train.jsonl", home)
    return home
