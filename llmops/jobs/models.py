"""Which model folder a job looks at when the user named none.

    llmops prompts lint            # counts tokens with the first of `lint_model_folders`
    llmops gate pr                 # tests `pr_gate.resolve_model`, which starts from the same aliases

The registry is read through `Registry.get`, so a version whose files do not match their checksums is
refused here, before anything loads it. This lives in the job layer because it joins the registry
(core) with the training config and the prepared base model (a stage): evals and serving take a
folder and never decide which one.
"""

from __future__ import annotations

from pathlib import Path

from llmops.registry import open_registry
from llmops.settings import Settings
from training.base_models import SMOLLM2
from training.base_models import model_dir as base_model_dir
from training.config import BootstrapConfig

RELEASE_ALIASES = ("production", "candidate")


def registry_model(settings: Settings, subdir: str = "onnx/fp32") -> tuple[str, Path, str] | None:
    """(alias, verified version folder's `files/<subdir>`, version) of production, else candidate."""
    reg = open_registry(settings)
    aliases = reg.aliases()
    for alias in RELEASE_ALIASES:
        if alias in aliases:
            mv = reg.get(alias)  # verifies checksums
            return alias, mv.files / subdir, mv.version
    return None


def lint_model_folders(settings: Settings) -> list[Path]:
    """Folders whose tokenizer may count prompt tokens, best first: production or candidate, the
    prepared default base model, then the newest bootstrapped micro model."""
    folders: list[Path] = []
    found = registry_model(settings)
    if found:
        folders.append(found[1])
    folders.append(base_model_dir(SMOLLM2))  # present once `llmops model prepare` (or training) ran
    store = settings.model_store
    if store.is_dir():
        folders += sorted((p for p in store.iterdir() if (p / "bootstrap.json").is_file()),
                          key=lambda p: p.stat().st_mtime, reverse=True)
    return folders


def default_context_length() -> int:
    """The context assumed when no tokenizer is found: the bootstrapped micro model's."""
    return BootstrapConfig().context_length
