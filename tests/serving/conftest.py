"""Fixtures of the serving tests: each model is exported once per session.

    .venv/bin/pytest tests/serving -q
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def exported(micro_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """ExportResult of the micro model: fp32 + int8 (fp16 asked for too; skipped without CUDA)."""
    from serving.export import export_model

    return export_model(micro_model, tmp_path_factory.mktemp("export") / "v1", ["fp32", "int8", "int4", "fp16"],
                        parity_n=4, max_new_tokens=16)


@pytest.fixture(scope="session")
def untied_model(micro_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro model's tokenizer and shape with random, untied weights.

    The trained micro model greedily repeats one token, which would hide position, mask and cache
    bugs; random untied logits give a different, byte-splitting token almost every step.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("untied")
    config = AutoConfig.from_pretrained(micro_model)
    config.tie_word_embeddings = False
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)  # a sharp, varied next-token distribution
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(micro_model).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def untied_export(untied_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serving.export import export_model

    result = export_model(untied_model, tmp_path_factory.mktemp("untied-export") / "v1", ["fp32"],
                          parity_n=2, max_new_tokens=8)
    return result.variants["fp32"]


@pytest.fixture(scope="session")
def ort_untied(untied_export: Path):
    from serving.runtime import OrtGenerator

    return OrtGenerator(untied_export)


@pytest.fixture(scope="session")
def torch_untied(untied_model: Path):
    from serving.runtime import TorchGenerator

    return TorchGenerator(untied_model, threads=1)  # 2 torch threads crawl when ORT or a server shares 2 cores
