"""End to end: the README's main job on a micro configuration, through the real CLI.

Real data (the committed FAQ split), a real bootstrapped Llama (tiny), real LoRA training,
a real ONNX export with the parity gate, a real registry, a real uvicorn server on loopback
and the eval runner talking HTTP to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.cli import main
from llmops.registry import Registry

MICRO = [
    "bootstrap.vocab_size=600", "bootstrap.hidden_size=32", "bootstrap.intermediate_size=64",
    "bootstrap.num_layers=2", "bootstrap.num_heads=2", "bootstrap.num_kv_heads=1",
    "bootstrap.context_length=256", "bootstrap.block_size=64", "bootstrap.batch_size=8",
    "bootstrap.max_steps=30", "max_steps=6", "batch_size=8", "max_length=128", "lora_r=4",
]


@pytest.mark.slow
def test_main_job_end_to_end(repo_root: Path, llmops_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["pipeline", "main", "--quiet", "--eval-limit", "6", *MICRO])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "eval report:" in out

    reg = Registry(llmops_home / "registry")
    assert reg.versions() == ["1"] and reg.aliases() == {"candidate": "1"}
    mv = reg.get("candidate")  # re-hashes every file
    lineage = mv.lineage
    card_files = json.loads(json.dumps(lineage["datasets"][0]["files"]))
    assert set(card_files) == {"train.jsonl", "eval.jsonl"}
    assert lineage["git"]["sha"] and len(lineage["prompts"]["answer"]) == 64
    assert lineage["training_config"]["lora_r"] == 4
    assert lineage["base_model"]["id"].startswith("local:default@")
    assert {"model", "adapter", "onnx", "loss_curve.png"} <= set(lineage["artifacts"])
    assert lineage["metrics"]["perplexity"] > 1
    assert (mv.files / "onnx" / "fp32" / "model.onnx").is_file()
    assert (mv.files / "model" / "prompt.yaml").is_file()

    parity = lineage["gates"]["export-parity"]
    assert parity["passed"] and parity["agreement_pct"]["fp32"] == 100.0
    assert "int8" in parity["agreement_pct"]

    job_dir = next((llmops_home / "runs").glob("main-*"))
    report = json.loads((job_dir / "eval" / "report.json").read_text())
    assert report["kind"] == "eval" and len(report["cases"]) >= 40
    assert all(case["output"] is not None for case in report["cases"])
    assert {"dataset.rouge_l", "dataset.token_f1", "pass_rate.refusal"} <= set(report["metrics"])
    attached = llmops_home / "registry" / "reports" / "1" / "eval" / "report.md"
    assert attached.read_text().startswith("<!-- llmops-eval-report -->")
