"""Publishing a registered version to the Hugging Face Hub (`llmops publish`).

The hub cannot be reached from here, so the part that can be tested is what would be sent: the
list of files (path in the repo -> local file) and the commit message, built by `plan_upload`;
`publish_version` hands exactly that to `huggingface_hub.HfApi.create_commit`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from governance.cards import render_model_card
from llmops.errors import InputError


def plan_upload(mv: Any, card_text: str, what: str = "merged") -> tuple[dict[str, Path], str]:
    """{path in repo: local file} for the weights (merged or adapter) and the ONNX export, plus the message."""
    files: dict[str, Path] = {}
    src = mv.files / ("model" if what == "merged" else "adapter")
    if not src.is_dir():
        raise InputError(f"version {mv.version} has no {what} weights", file=str(src))
    for path in sorted(src.rglob("*")):
        if path.is_file() and path.name != "README.md":
            files[path.relative_to(src).as_posix()] = path
    onnx = mv.files / "onnx"
    for path in sorted(onnx.rglob("*")) if onnx.is_dir() else []:
        if path.is_file() and path.suffix not in (".md",) and path.name != "parity.json":
            files[f"onnx/{path.relative_to(onnx).as_posix()}"] = path
    lineage = mv.lineage
    git = lineage.get("git", {})
    message = (f"llmops version {mv.version} ({what}) from git {str(git.get('sha'))[:12]}"
               f"{' (dirty)' if git.get('dirty') else ''}")
    files["README.md"] = Path("<card>")  # the model card, sent from memory
    return files, message


def publish_version(registry: Any, ref: str, repo_id: str, *, token: str | None = None, what: str = "merged",
                    dry_run: bool = False, repo_root: Path | None = None) -> dict[str, Any]:
    mv = registry.get(ref)  # verifies every checksum before anything leaves the machine
    card_text = render_model_card(mv.version, mv.lineage, repo_id)
    files, message = plan_upload(mv, card_text, what)
    plan: dict[str, Any] = {"repo_id": repo_id, "files": sorted(files), "commit_message": message}
    if dry_run:
        return plan
    token = token or os.environ.get("HF_TOKEN")
    if not token:
        raise InputError("publishing needs a Hub token (HF_TOKEN or --token)", field="token")
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True, private=True)
    ops = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card_text.encode())]
    ops += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
            for name, path in files.items() if name != "README.md"]
    info = api.create_commit(repo_id=repo_id, operations=ops, commit_message=message)
    plan["url"] = getattr(info, "commit_url", repo_id)
    return plan
