"""`llmops train --sweep N`: seeded Optuna trials of the real LoRA fine-tune, and the QLoRA guard.

    .venv/bin/pytest tests/training/test_sweep.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.cli import main
from llmops.errors import InputError
from llmops.settings import Settings
from tests.test_main_job import MICRO
from training.config import load_config
from training.finetune import train
from training.sweep import EPOCHS, LEARNING_RATE, LORA_R


def test_sweep_runs_trials_and_records_the_best(llmops_home: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "sweep"
    code = main(["train", "--sweep", "2", "--quiet", "--run-dir", str(out_dir), *MICRO, "max_steps=2"])
    out = capsys.readouterr().out
    assert code == 0, out

    summary = json.loads((out_dir / "sweep.json").read_text())
    trials = summary["trials"]
    assert [t["number"] for t in trials] == [0, 1]
    for t in trials:
        p = t["params"]
        assert t["state"] == "COMPLETE"
        assert LEARNING_RATE[0] <= p["learning_rate"] <= LEARNING_RATE[1]
        assert p["lora_r"] in LORA_R
        assert EPOCHS[0] <= p["epochs"] <= EPOCHS[1] and isinstance(p["epochs"], int)
        assert (out_dir / f"trial-{t['number']}" / "metrics.json").is_file()
        # Each trial really trained with its params.
        run_cfg = (out_dir / f"trial-{t['number']}" / "config.yaml").read_text()
        assert f"lora_r: {p['lora_r']}" in run_cfg
    best = min(trials, key=lambda t: t["metrics"]["eval_loss"])
    assert summary["best"]["number"] == best["number"]
    assert summary["best"]["eval_loss"] == best["metrics"]["eval_loss"]
    assert summary["seed"] == 42 and summary["n_trials"] == 2

    assert "<- best" in out and "apply: llmops train" in out
    assert f"lora_r={best['params']['lora_r']}" in out.split("apply:")[1]
    # The swept keys replace the same keys given on the command line (lora_r=4 from MICRO).
    assert out.split("apply:")[1].count("lora_r=") == 1


def test_sweep_refuses_a_non_empty_folder(llmops_home: Path, tmp_path: Path) -> None:
    from training.sweep import run_sweep

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "sweep.json").write_text("{}")
    with pytest.raises(InputError, match="not empty"):
        run_sweep(load_config(None, MICRO), Settings(home=llmops_home), 1, tmp_path / "old", seed=0)


def test_4bit_without_cuda_names_the_quantization_field(llmops_home: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = load_config(None, [*MICRO, "quantization=4bit"])
    with pytest.raises(InputError, match=r"4bit QLoRA needs a CUDA GPU and the qlora extra") as err:
        train(cfg, Settings(home=llmops_home), progress=False)
    assert err.value.field == "quantization"
    with pytest.raises(InputError) as err:
        load_config(None, ["quantization=8bit"])
    assert err.value.field == "quantization"
