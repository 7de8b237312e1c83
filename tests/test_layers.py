"""The import layers hold: `lint-imports` with the contracts in pyproject.toml, and a core list that
names every core module (a new module in llmops/ must be placed in a layer)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a test dependency (pyproject.toml [test])"
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_every_core_module_is_in_a_layer() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["id"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    core = {f"llmops.{p.stem}" for p in (ROOT / "llmops").glob("*.py") if p.stem != "__init__"}
    missing = sorted(core - named)
    assert not missing, f"pyproject.toml [tool.importlinter] layers: place {missing} in a layer"


def test_core_and_jobs_type_check() -> None:
    exe = shutil.which("mypy", path=str(Path(sys.executable).parent))
    assert exe, "mypy is a test dependency (pyproject.toml [test])"
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=600)  # [tool.mypy] files
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
