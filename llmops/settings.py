"""Settings every command shares: where the repo and the local store live, and the offline environment.

`apply_offline_env()` is the one place the offline switches are set; the CLI entry point and the
test suite's conftest call it before anything imports transformers, deepeval or whylogs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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


class Settings(BaseSettings):
    """Every setting of the project: the repository and the local store, and each `LLMOPS_*` variable.

    Built once per process (the CLI entry point, a worker, the test fixture) and passed down;
    modules take a `Settings` and do not read the environment themselves. Tests build one with
    keyword arguments (`Settings(root=repo, home=tmp, guards=False)`) instead of editing
    `os.environ`. Secrets are `SecretStr`: their repr and any log line show `**********`.
    """

    model_config = SettingsConfigDict(env_prefix="LLMOPS_", frozen=True, extra="ignore")

    root: Path = Field(description="The repository (LLMOPS_ROOT); default: found from the working folder.")
    home: Path = Field(description="The local store (LLMOPS_HOME); default <root>/.llmops.")
    cache: Path | None = Field(None, description="Downloaded wheels and converted base models (LLMOPS_CACHE); "
                                                 "default $XDG_CACHE_HOME/llmops, else ~/.cache/llmops.")
    api_key: SecretStr | None = Field(None, description="The caller's API key (LLMOPS_API_KEY).")
    keys_file: Path | None = Field(None, description="The API key file (LLMOPS_KEYS_FILE); default <home>/apikeys.json.")
    eval_api_key: SecretStr | None = Field(None, description="Bearer token of an evaluated endpoint.")
    eval_endpoint: str = Field("", description="The endpoint `deepeval test run evals/test_deepeval_suite.py` scores.")
    eval_dataset: Path | None = Field(None, description="Its dataset folder (default datasets/python-faq).")
    eval_limit: int = Field(10, ge=1, description="Its number of eval rows.")
    judge_url: str | None = Field(None, description="An OpenAI-compatible judge for DeepEval's judged metrics.")
    judge_model: str | None = None
    judge_api_key: SecretStr | None = None
    worker_token: SecretStr | None = Field(None, description="The gateway's token that its workers accept in place of "
                                                         "an API key (LLMOPS_WORKER_TOKEN; set by the gateway).")
    receipt_key: SecretStr | None = Field(None, description="Fernet key of the response receipts (LLMOPS_RECEIPT_KEY); "
                                                         "default <home>/serving/receipt.key.")
    guards: bool = Field(True, description="Serve with the input and output guards (LLMOPS_GUARDS=0: off).")
    scope_check: bool = Field(True, description="With the guards: keep the refusal from opening the answer of a chat "
                              "question governance/scope.py is sure is about Python and not an attack "
                              "(LLMOPS_SCOPE_CHECK=0: off, the model alone decides).")
    operate: bool = Field(True, description="Serve the operations routes: drift, feedback (LLMOPS_OPERATE=0: off).")
    prefix_cache: bool = Field(True, description="Cache the KV of prompt starts that requests share, such as the "
                                                 "system turn (serving/batching.py; LLMOPS_PREFIX_CACHE=0: off).")
    ort_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0: one per core).")
    allow_faults: bool = Field(False, description="Let the gateway inject faults (tests and drills only).")
    fault: str = Field("", description="The fault a fault-injecting worker applies (serving/gateway/faults.py).")
    registry_uri: str | None = Field(None, description="A shared MLflow tracking server for the registry and the "
                                                       "training runs (LLMOPS_REGISTRY_URI=http://host:5000); "
                                                       "unset: the local folder <home>/registry.")
    registry_model: str = Field("llmops", pattern=r"^[A-Za-z0-9_.-]+$", description="The MLflow registered model and experiment "
                                                                    "name (LLMOPS_REGISTRY_MODEL).")

    @model_validator(mode="before")
    @classmethod
    def _paths(cls, data: Any) -> Any:
        if isinstance(data, dict):
            root = Path(data.get("root") or find_repo_root()).expanduser().resolve()
            home = data.get("home")
            data = {**data, "root": root, "home": Path(home).expanduser().resolve() if home else root / ".llmops"}
        return data

    @field_validator("registry_uri")
    @classmethod
    def _registry_uri(cls, value: str | None) -> str | None:
        value = (value or "").strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"LLMOPS_REGISTRY_URI must be an http(s):// MLflow tracking server, not {value!r}")
        return value or None

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from the environment (LLMOPS_*), with `overrides` on top."""
        return cls(**overrides)

    def secret(self, name: str) -> str | None:
        """The value of secret field `name`, or None when unset or blank (an empty secret is no secret)."""
        value = getattr(self, name)
        text = value.get_secret_value().strip() if value is not None else ""
        return text or None

    @property
    def model_cache(self) -> Path:
        if self.cache is not None:
            return Path(self.cache).expanduser().resolve()
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return base / "llmops"

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
