"""The default recipe's LoRA adapter, trained once and committed under the inputs that made it.

tests/test_real_model.py needs the model the main job trains: SmolLM2-135M-Instruct tuned by
training/config.yaml. Training it takes 15-22 minutes on 2 cores, longer than the rest of the
suite. So the adapter `llmops train` wrote is kept in tests/data/default-adapter/ with a key
(`training_key`): the recipe's values, the training datasets and the prompt file it renders them
with, the code that turns them into weights (TRAINING_CODE), and constraints.txt (the library
versions). It is narrower than the main pipeline's train-stage hash, which also covers plumbing
(settings, file writing, reports, the CLI) and so changes with edits that leave every weight as it
was: with that hash, adding a setting made the suite train for 15 minutes. While the key matches, the fixture merges the
committed adapter into the base model (seconds). When anything that decides the training changes,
the key does not match, the fixture trains as the main job would, and says so in a warning.

Refresh it after a change to the recipe, the training data or the training code:

    llmops train --run-dir RUN
    python -m tests.default_adapter save RUN
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "tests" / "data" / "default-adapter"
FILES = ("adapter_model.safetensors", "adapter_config.json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The code that decides the numbers: how rows become tokens (the prompt rendering, the tokenisation, the
# mix of passes), the trainer's arguments, the LoRA config, the merge, and the base model's conversion.
# Not the plumbing the main pipeline's train-stage hash also covers (settings, errors, file writing,
# reports, tracking, licences, the CLI), which changes for reasons that leave every weight as it was.
TRAINING_CODE = ("training/finetune.py", "training/tokenise.py", "training/config.py", "training/base_models.py",
                 "llmops/prompts.py", "llmops/dataset.py")


def training_key(root: Path = ROOT) -> dict[str, Any]:
    """What decides the adapter: the recipe's values (training/config.yaml), the training datasets and the
    prompt file it renders them with, the training code, and the pinned library versions (constraints.txt)."""
    from llmops.jobs.pipeline import hash_paths
    from llmops.prompts import load_prompt
    from training.config import load_config

    cfg = load_config(root / "training" / "config.yaml")
    prompt_path = load_prompt(cfg.prompt, root / "prompts").path
    assert prompt_path is not None  # load_prompt records the file it read
    prompt = prompt_path.resolve().relative_to(root.resolve()).as_posix()
    return {"config": hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest(),
            "data": hash_paths(root, [cfg.dataset, *cfg.extra_datasets, prompt]),
            "code": hash_paths(root, list(TRAINING_CODE)),
            "constraints": _sha256(root / "constraints.txt")}


def committed_adapter(root: Path = ROOT) -> tuple[Path | None, str]:
    """(the committed adapter's folder, why) when it was trained on today's inputs and its files are whole;
    (None, why not) otherwise."""
    folder = root / COMMITTED.relative_to(ROOT)
    meta_path = folder / "key.json"
    if not meta_path.is_file():
        return None, f"{meta_path.relative_to(root)} is missing"
    meta = json.loads(meta_path.read_text())
    now = training_key(root)
    if meta.get("key") != now:
        changed = sorted(k for k in now if meta.get("key", {}).get(k) != now[k])
        return None, f"the committed adapter was trained on other inputs ({', '.join(changed)} changed)"
    for name in FILES:
        if _sha256(folder / name) != meta["sha256"].get(name):
            return None, f"{(folder / name).relative_to(root)} does not match its sha256 in key.json"
    return folder, "key matches"


def save(run_dir: Path, root: Path = ROOT) -> Path:
    """Commit-ready copy of `llmops train`'s adapter in RUN (trained with training/config.yaml as it is)."""
    import yaml

    from training.config import load_config

    run_dir = Path(run_dir)
    used = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    used.pop("_resolved", None)
    default = load_config(root / "training" / "config.yaml").model_dump(mode="json")
    if json.dumps(used, sort_keys=True) != json.dumps(default, sort_keys=True):
        raise SystemExit(f"{run_dir}/config.yaml is not training/config.yaml's recipe: train with `llmops train "
                         f"--run-dir {run_dir}` and no overrides")
    folder = root / COMMITTED.relative_to(ROOT)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(run_dir / "adapter" / name, tmp / name)
    metrics: dict[str, Any] = json.loads((run_dir / "metrics.json").read_text())
    meta = {"key": training_key(root), "sha256": {name: _sha256(tmp / name) for name in FILES},
            "metrics": metrics, "made_by": "llmops train --run-dir RUN; python -m tests.default_adapter save RUN"}
    (tmp / "key.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "save":
        print("usage: python -m tests.default_adapter save RUN_DIR", file=sys.stderr)
        raise SystemExit(2)
    print(f"saved {save(Path(sys.argv[2]))}")
