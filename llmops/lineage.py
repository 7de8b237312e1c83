"""The lineage record of a model version: what it was built from, with what, and how it scored.

One JSON object per version (see DESIGN.md, "Contracts between stages"): git sha and dirty flag,
dataset ids with sha256, prompt ids with sha256, the resolved training config, the base model id
and sha256, adapter and export sha256s (added by the registry), package versions, metrics and
the gates passed with their reports.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from llmops.dataset import load_card
from llmops.files import sha256_file

PACKAGES = ("torch", "transformers", "tokenizers", "peft", "optimum", "optimum-onnx", "onnx", "onnxruntime",
            "onnxruntime-gpu", "fastapi", "deepeval", "whylogs", "datasets", "numpy", "llmops")


def git_info(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"sha": None, "dirty": None, "branch": None}
    return {"sha": sha, "dirty": dirty, "branch": branch}


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def dataset_entry(dataset_dir: Path, root: Path) -> dict[str, Any]:
    """Id, licence and the sha256 of each data file as it is on disk now."""
    card = load_card(dataset_dir)
    files = {p.name: sha256_file(p) for p in sorted(dataset_dir.glob("*.jsonl"))}
    return {"id": dataset_dir.relative_to(root).as_posix() if dataset_dir.is_relative_to(root) else str(dataset_dir),
            "license": card.license, "files": files}


def tree_sha256(folder: Path) -> str:
    """One hash for a folder: sha256 over its sorted (relative path, file sha256) pairs."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def build_lineage(*, root: Path, datasets: list[Path], prompts: dict[str, str], config: dict[str, Any],
                  base_model: dict[str, Any], metrics: dict[str, Any], gates: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": 1,
        "git": git_info(root),
        "datasets": [dataset_entry(d, root) for d in datasets],
        "prompts": prompts,
        "training_config": config,
        "base_model": base_model,
        "packages": package_versions(),
        "metrics": metrics,
        "gates": gates,
    }
