"""Settings every command shares: where the repo and the local store live, and the offline environment.

`apply_offline_env()` is the one place the offline switches are set; the CLI entry point and the
test suite's conftest call it before anything imports transformers, deepeval or whylogs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Without these, hub clients try the network and deepeval/whylogs phone home.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
    "DEEPEVAL_UPDATE_WARNING_OPT_OUT": "YES",
    "WHYLOGS_NO_ANALYTICS": "True",
    "PROMPTFOO_DISABLE_TELEMETRY": "1",
    "PROMPTFOO_DISABLE_UPDATE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DO_NOT_TRACK": "1",
}


def apply_offline_env() -> None:
    """Set the offline switches unless the user set them (a configured hub model may unset them)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def find_repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` that holds pyproject.toml and prompts/."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "prompts").is_dir():
            return folder
    return here


@dataclass(frozen=True)
class Settings:
    """Paths of the repository and the local store (`.llmops/` unless LLMOPS_HOME says otherwise)."""

    root: Path
    home: Path

    @classmethod
    def load(cls) -> Settings:
        root = Path(os.environ["LLMOPS_ROOT"]).resolve() if "LLMOPS_ROOT" in os.environ else find_repo_root()
        home = Path(os.environ.get("LLMOPS_HOME", root / ".llmops")).resolve()
        return cls(root=root, home=home)

    @property
    def registry_dir(self) -> Path:
        return self.home / "registry"

    @property
    def model_store(self) -> Path:
        """Base models the project builds itself (`llmops model bootstrap`), keyed by content hash."""
        return self.home / "models"

    @property
    def runs_dir(self) -> Path:
        """Working output of training/export/eval runs before they are registered."""
        return self.home / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def prompts_dir(self) -> Path:
        return self.root / "prompts"
