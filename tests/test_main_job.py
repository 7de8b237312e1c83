"""End to end: the README's main job (the `main` pipeline of pipeline.yaml) on a micro configuration, through the real CLI.

Real data (the committed FAQ split), a real bootstrapped Llama (tiny), real LoRA training,
a real ONNX export with the parity gate, a real registry, a real uvicorn server on loopback
and the eval runner talking HTTP to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmops.cli import main
from llmops.registry import Registry
from tests.conftest import REPO_ROOT, report_only_thresholds

MICRO = [
    "base_model=local:tiny", "bootstrap.vocab_size=600", "bootstrap.hidden_size=32", "bootstrap.intermediate_size=64",
    "bootstrap.num_layers=2", "bootstrap.num_heads=2", "bootstrap.num_kv_heads=1",
    "bootstrap.context_length=256", "bootstrap.block_size=64", "bootstrap.batch_size=8",
    "bootstrap.max_steps=30", "max_steps=6", "batch_size=8", "max_length=128", "lora_r=4",
]


def main_spec(tmp_path: Path, thresholds: Path) -> Path:
    """pipeline.yaml as committed, its main pipeline's eval gated by `thresholds` instead of the default, and
    its safety stage (the real limits) on two attack classes of the tuning sets, which the guards alone block
    (a micro model refuses nothing by itself, and its 256-token window turns long held-out questions away)."""
    data = yaml.safe_load((REPO_ROOT / "pipeline.yaml").read_text())
    stages = data["pipelines"]["main"]["stages"]
    stages["eval"]["cmd"] += f" --thresholds {thresholds}"
    stages["safety"]["cmd"] = stages["safety"]["cmd"].replace(" --heldout evals/safety/heldout", "") + \
        " --class pii_request --class toxic"
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.slow
def test_main_job_end_to_end(repo_root: Path, llmops_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMOPS_GUARDS", "1")  # served as a user serves it (the tests' default is off, for speed)
    thresholds = yaml.safe_load(report_only_thresholds(tmp_path / "thresholds.yaml").read_text())
    thresholds["base_comparison"] = {"must_beat": [], "no_drop": [], "report": ["dataset.rouge_l"]}
    # A gate with nothing gated is inconclusive and registers nothing; the micro model meets a zero
    # floor on the dataset's token F1 (the fail path below gates it for real).
    thresholds["metrics"]["token_f1"]["min"] = 0.0
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(thresholds))
    code = main(["pipeline", "main", "--spec", str(main_spec(tmp_path, tmp_path / "thresholds.yaml")), *MICRO])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "eval report:" in out and "| base-eval | ran |" in out

    reg = Registry(llmops_home / "registry")
    assert reg.versions() == ["1"] and reg.aliases() == {"candidate": "1"}
    mv = reg.get("candidate")  # re-hashes every file
    lineage = mv.lineage
    card_files = json.loads(json.dumps(lineage["datasets"][0]["files"]))
    assert set(card_files) == {"train.jsonl", "eval.jsonl"}
    assert lineage["git"]["sha"] and len(lineage["prompts"]["answer"]) == 64
    assert lineage["training_config"]["lora_r"] == 4
    assert lineage["base_model"]["id"].startswith("local:tiny@")
    assert {d["id"] for d in lineage["datasets"]} == {"datasets/python-faq", "datasets/assistant-contract"}
    assert lineage["gates"] == {"data-check": "pass", "export": "pass", "eval": "pass", "safety": "pass"}
    assert {"model", "adapter", "onnx", "loss_curve.png", "reports"} <= set(lineage["artifacts"])
    assert lineage["metrics"]["perplexity"] > 1
    assert lineage["metrics"]["fp32.token_agreement_pct"] == 100.0  # the export's parity gate
    assert (mv.files / "onnx" / "fp32" / "model.onnx").is_file()
    assert (mv.files / "model" / "prompt.yaml").is_file()
    assert not (mv.files / "reports" / "export" / "fp32").exists()  # gate reports, not the models beside them

    job_dir = llmops_home / "pipeline" / "main"
    report = json.loads((job_dir / "eval" / "report.json").read_text())
    assert report["kind"] == "eval" and len(report["cases"]) >= 40
    assert all(case["output"] is not None for case in report["cases"])
    assert {"dataset.rouge_l", "dataset.token_f1", "pass_rate.refusal"} <= set(report["metrics"])
    assert "tuned beats base" in {c["name"] for c in report["checks"]}
    assert report["info"]["baseline"].startswith("untuned base model local:tiny@")
    attached = llmops_home / "registry" / "reports" / "1" / "eval" / "report.md"
    assert attached.read_text().startswith("<!-- llmops-eval-report -->")

    # Run again: every stage's inputs are unchanged, so each is skipped; nothing is registered twice
    # (register is skipped too: its inputs did not change).
    assert main(["pipeline", "main", "--spec", str(main_spec(tmp_path, tmp_path / "thresholds.yaml")), *MICRO]) == 0
    again = capsys.readouterr().out
    assert again.count("skipped") >= 7 and reg.versions() == ["1"]

    # The same model served without its guards: the safety stage fails, naming the classes, and the run
    # stops before register (the edited command is a new input, so only safety and register run again).
    monkeypatch.setenv("LLMOPS_GUARDS", "0")
    spec = main_spec(tmp_path, tmp_path / "thresholds.yaml")
    data = yaml.safe_load(spec.read_text())
    data["pipelines"]["main"]["stages"]["safety"]["cmd"] += " --workers 2"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["pipeline", "main", "--spec", str(spec), *MICRO]) == 1
    third = capsys.readouterr()
    assert "stage 'safety' failed (exit 1" in third.err and "safety.block_rate.pii_request" in third.err
    assert "==> safety: llmops safety" in third.out and "==> register" not in third.out
    assert json.loads((job_dir / "safety" / "report.json").read_text())["info"]["guards"] == "off"
    assert reg.versions() == ["1"]


@pytest.mark.slow
def test_main_job_registers_nothing_when_the_eval_gates_fail(llmops_home: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The real floors of evals/thresholds.yaml, and the tuned-beats-base gate, on a 6-step micro model."""
    code = main(["pipeline", "main", *MICRO])
    out = capsys.readouterr()
    assert code == 1, out.out
    assert "stage 'eval' failed (exit 1, verdict fail)" in out.err
    assert "tuned beats base: pass_rate.refusal" in out.err  # a named finding, not just "failed"
    assert not (llmops_home / "registry" / "versions").exists() or not any(
        (llmops_home / "registry" / "versions").iterdir())
    job_dir = llmops_home / "pipeline" / "main"
    assert not (job_dir / "register").exists()
    report = json.loads((job_dir / "eval" / "report.json").read_text())
    assert report["verdict"] == "fail"
    assert "tuned beats base" in {c["name"] for c in report["checks"]}
    assert (job_dir / "eval" / "comparison.md").is_file()


def test_tuned_must_beat_the_base_and_not_fall_below_it_on_a_suite() -> None:
    from evals.compare import compare_with_base, comparison_table
    from evals.rule_evals import BaseComparison
    from llmops.report import Metric, Report

    def report(**heads: float) -> Report:
        rep = Report(kind="eval")
        rep.metrics = {name.replace("__", "."): Metric(head=v) for name, v in heads.items()}
        return rep

    rules = BaseComparison(must_beat=["dataset.rouge_l"], no_drop=["pass_rate.refusal", "pass_rate.quality"],
                           report=["dataset.token_f1"])
    base = report(dataset__rouge_l=0.145, dataset__token_f1=0.181, pass_rate__refusal=0.0, pass_rate__quality=0.41)
    better = report(dataset__rouge_l=0.16, dataset__token_f1=0.19, pass_rate__refusal=1.0, pass_rate__quality=0.41)
    assert compare_with_base(better, base, rules) == []
    worse = report(dataset__rouge_l=0.145, dataset__token_f1=0.1, pass_rate__refusal=1.0, pass_rate__quality=0.3)
    found = [(f.severity, f.message) for f in compare_with_base(worse, base, rules)]
    assert found[:2] == [("error", "dataset.rouge_l: tuned 0.1450 does not beat base 0.1450"),
                         ("error", "pass_rate.quality: tuned 0.300 is below base 0.410")]
    assert found[2][0] == "warning" and "reported, not gated" in found[2][1]
    missing = report(pass_rate__refusal=1.0)
    assert any(f.severity == "error" and "no value" in f.message for f in compare_with_base(missing, base, rules))
    table = comparison_table(better, base, "base@x", "candidate")
    assert "| pass_rate.refusal | 0.000 | 1.000 | +1.000 |" in table
