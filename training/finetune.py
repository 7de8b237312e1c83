"""LoRA fine-tuning (peft) with the transformers Trainer, in the instruction format of a prompt file.

    llmops train                       # training/config.yaml
    llmops train lora_r=8 epochs=1     # with overrides

Each example is the prompt rendered with the row's question (and context), followed by the
answer and end-of-sequence; only the answer tokens carry loss. Writes into a fresh run folder:
adapter/ (peft), merged/ (the adapter merged into the base, ready for export, with the prompt
file beside it), loss_curve.png, metrics.json and config.yaml (the resolved config).

QLoRA (`quantization: 4bit`, CUDA and `pip install -e '.[qlora]'` only): the frozen base is loaded
in 4-bit NF4 (bitsandbytes, bf16 compute) and prepared with peft's prepare_model_for_kbit_training;
the LoRA weights train in higher precision on top. A 4-bit base cannot be merged losslessly, so
merged/ is built by reloading the base unquantized in fp32 (the dtype of the non-quantized path, so
export and its parity gate see the same kind of checkpoint) and merging the saved adapter/ into it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance.licenses import check_dataset_license
from llmops.dataset import load_card, read_jsonl
from llmops.errors import InputError
from llmops.files import atomic_dir
from llmops.prompts import load_prompt
from llmops.settings import Settings
from llmops.tracking import check_tracking, log_training_run
from training.base_models import base_model_license_findings, lookup, prepare
from training.bootstrap import bootstrap
from training.config import TINY_BASE_MODEL, TrainConfig
from training.tokenise import tokenise


@dataclass
class TrainResult:
    run_dir: Path
    base_model_path: Path
    metrics: dict[str, Any]

    @property
    def merged_dir(self) -> Path:
        return self.run_dir / "merged"

    @property
    def adapter_dir(self) -> Path:
        return self.run_dir / "adapter"


def resolve_base_model(cfg: TrainConfig, settings: Settings, *, progress: bool = True) -> tuple[str, dict]:
    """Return (path or hub id, info).

    `local:smollm2-135m-instruct` converts (once) the fetched wheel's GGUF; `local:tiny` builds (or
    reuses) the self-built micro model.
    """
    if cfg.base_model == TINY_BASE_MODEL:
        result = bootstrap(cfg.bootstrap, settings.root / cfg.dataset / "train.jsonl", settings.model_store,
                           progress=progress)
        return str(result.path), {"id": f"local:tiny@{result.key}", "license": result.info.get("license"),
                                  "cached": result.cached}
    spec = lookup(cfg.base_model)
    if spec is not None:
        path, info = prepare(spec, echo=print if progress else (lambda _: None))
        return str(path), info
    path = Path(cfg.base_model)
    if path.exists():
        return str(path.resolve()), {"id": str(path.resolve()), "license": None}
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        # A hub id while offline: only the local HF cache can satisfy it; say how to go online.
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(cfg.base_model, "config.json"), str):
            raise InputError(f"{cfg.base_model!r} is neither a local path nor in the Hugging Face cache, and "
                             "HF_HUB_OFFLINE=1; export HF_HUB_OFFLINE=0 to download it", field="base_model")
    return cfg.base_model, {"id": cfg.base_model, "license": None}


def save_merged(merged: Any, tok: Any, out_dir: Path, prompt_path: Path) -> None:
    """merged/: the merged model, its tokenizer and, beside them, the prompt file it learned (the serving
    runtime renders chat requests with it)."""
    merged.generation_config.pad_token_id = tok.pad_token_id
    merged.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    shutil.copyfile(prompt_path, out_dir / "prompt.yaml")


def merge_adapter(base_path: str | Path, adapter_dir: Path, out_dir: Path, prompt_path: Path) -> None:
    """A saved LoRA adapter merged into an fp32 load of its base, written as train() writes merged/."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    save_merged(PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload(), tok, out_dir, prompt_path)


def plot_loss_curve(log_history: list[dict[str, Any]], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("LoRA fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def mix_passes(parts: list[tuple[list[dict[str, Any]], float]], seed: int) -> list[dict[str, Any]]:
    """Each part's rows repeated `passes` times (a fractional pass: a seeded sample of the rows)."""
    import random

    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for rows, passes in parts:
        whole = int(passes)
        out += rows * whole
        out += rng.sample(rows, round((passes - whole) * len(rows))) if rows else []
    return out


def training_parts(cfg: TrainConfig, dirs: list[Path], tokenised: Any) -> list[tuple[list[dict[str, Any]], float]]:
    """(rows, passes) for mix_passes: `dataset`'s train rows for `epochs` passes, all `extra_datasets`'
    for `extra_epochs`; then, per part, the rows carrying a `tag_passes` tag again for (multiplier - 1)
    of those passes (a row's largest multiplier wins), so {refusal: 2.0} shows a refusal row twice a pass.
    """
    parts = []
    for indices, passes in (([0], cfg.epochs), (range(1, len(dirs)), cfg.extra_epochs)):
        rows = [row for i in indices for row in tokenised.rows("train", i)]
        parts.append((rows, passes))
        if not cfg.tag_passes:
            continue
        ids = [rid for i in indices for rid in tokenised.ids("train", i)]
        tags = {row["id"]: row.get("tags") or [] for i in indices for _, row in read_jsonl(dirs[i] / "train.jsonl")}
        by_factor: dict[float, list[dict[str, Any]]] = {}
        for row, rid in zip(rows, ids, strict=True):
            factor = max([cfg.tag_passes.get(t, 1.0) for t in tags.get(rid, [])], default=1.0)
            if factor != 1.0:
                by_factor.setdefault(factor, []).append(row)
        parts += [(tagged, passes * (factor - 1)) for factor, tagged in sorted(by_factor.items()) if factor > 1]
    return parts


def dataset_dirs(cfg: TrainConfig, settings: Settings) -> list[Path]:
    """The training datasets: `dataset` first (its eval split is the held-out set), then `extra_datasets`."""
    return [settings.root / d for d in [cfg.dataset, *cfg.extra_datasets]]


def check_licenses(cfg: TrainConfig, settings: Settings, base_path: str) -> str:
    """Every dataset's and the base model's licences against governance/licenses.yaml (the one allowlist).

    Returns the datasets' licences joined with " AND " (one SPDX expression for the model card).
    """
    findings = []
    for folder in dataset_dirs(cfg, settings):
        findings += check_dataset_license(folder)
    findings += base_model_license_findings(cfg.base_model, base_path, cfg.base_model_license)  # hub ids too
    if findings:
        f = findings[0]
        raise InputError(f.message, file=f.file, line=f.line, field=f.field)
    licences = list(dict.fromkeys(load_card(d).license for d in dataset_dirs(cfg, settings)))
    return " AND ".join(licences)


QLORA_HINT = "4bit QLoRA needs a CUDA GPU and the qlora extra (pip install -e '.[qlora]')"


def check_quantization(cfg: TrainConfig) -> None:
    """Fail fast (before any model is built) when 4-bit QLoRA cannot run here."""
    if cfg.quantization != "4bit":
        return
    import importlib.util

    import torch

    missing = [what for what, ok in (("no CUDA device", torch.cuda.is_available()),
                                     ("bitsandbytes is not installed",
                                      importlib.util.find_spec("bitsandbytes") is not None)) if not ok]
    if missing:
        raise InputError(f"{QLORA_HINT}; here: {', '.join(missing)}", field="quantization")


def train(cfg: TrainConfig, settings: Settings | None = None, *, run_dir: Path | None = None,
          progress: bool = True) -> TrainResult:
    import torch
    import yaml
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    check_quantization(cfg)
    settings = settings or Settings.load()
    check_tracking(settings)  # with LLMOPS_REGISTRY_URI: an unreachable MLflow server fails now, not after training
    prompt = load_prompt(cfg.prompt, settings.prompts_dir)
    assert prompt.path is not None  # load_prompt records the file it read
    base_path, base_info = resolve_base_model(cfg, settings, progress=progress)
    dataset_license = check_licenses(cfg, settings, base_path)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)

    cuda = torch.cuda.is_available()
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if cuda else "fp32")
    tok = AutoTokenizer.from_pretrained(base_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    qlora = cfg.quantization == "4bit"
    if qlora:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                 bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(base_path, quantization_config=bnb, device_map={"": 0})
        model = prepare_model_for_kbit_training(model)
    else:
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()

    tokenised = tokenise(dataset_dirs(cfg, settings), cfg.prompt, settings.prompts_dir, Path(base_path) if Path(base_path).is_dir()
                         else base_path, cfg.max_length, settings.cache_dir / "tokenised",
                         cfg.max_answer_tokens)
    # One pass over a mix: `dataset` repeated `epochs` times, `extra_datasets` `extra_epochs` times,
    # rows with a `tag_passes` tag more often.
    train_ds = mix_passes(training_parts(cfg, dataset_dirs(cfg, settings), tokenised), cfg.seed)
    eval_ds = tokenised.rows("eval")
    train_tokens = sum(len(e["input_ids"]) for e in train_ds)

    run_dir = Path(run_dir) if run_dir else settings.runs_dir / f"train-{time.strftime('%Y%m%d-%H%M%S')}"
    with atomic_dir(run_dir) as tmp:
        args = TrainingArguments(
            output_dir=str(tmp / "trainer"), per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
            group_by_length=cfg.group_by_length,
            num_train_epochs=1, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
            warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay, lr_scheduler_type="cosine",
            logging_steps=cfg.logging_steps, eval_strategy="epoch" if cfg.max_steps < 0 else "no",
            save_strategy="no", report_to=[], seed=cfg.seed, data_seed=cfg.seed,
            bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not cuda,
            dataloader_num_workers=0, disable_tqdm=not progress, remove_unused_columns=False,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
        start = time.perf_counter()
        out = trainer.train()
        seconds = time.perf_counter() - start
        state = trainer.state
        # The epoch-end evaluation already scored the final weights: do not pay for it twice.
        last = state.log_history[-2] if len(state.log_history) >= 2 else {}
        eval_out = ({"eval_loss": last["eval_loss"]} if "eval_loss" in last and last.get("epoch") == state.epoch
                    else trainer.evaluate())
        shutil.rmtree(tmp / "trainer", ignore_errors=True)

        model.save_pretrained(str(tmp / "adapter"))
        tok.save_pretrained(str(tmp / "adapter"))
        if qlora:
            # Merge into a full-precision reload of the base, not into the NF4 weights.
            del trainer, model
            if cuda:
                torch.cuda.empty_cache()
            merge_adapter(base_path, tmp / "adapter", tmp / "merged", prompt.path)
        else:
            save_merged(model.merge_and_unload(), tok, tmp / "merged", prompt.path)
        plot_loss_curve(state.log_history, tmp / "loss_curve.png")

        epochs_done = float(out.metrics.get("epoch", 1.0))  # passes over the mix
        metrics = {
            "train_loss": round(out.training_loss, 4),
            "eval_loss": round(eval_out["eval_loss"], 4),
            "perplexity": round(math.exp(min(eval_out["eval_loss"], 50)), 3),
            "train_seconds": round(seconds, 1),
            "train_tokens_per_second": round(train_tokens * epochs_done / seconds, 1),
            "trainable_parameters": trainable, "total_parameters": total,
            "train_rows": len(train_ds), "eval_rows": len(eval_ds), "precision": precision,
            "quantization": cfg.quantization,
            "steps": state.global_step, "tokenised_cache": tokenised.key,
        }
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (tmp / "log_history.json").write_text(json.dumps(state.log_history, indent=2) + "\n")
        resolved = cfg.model_dump()
        resolved["_resolved"] = {"base_model_path": base_path, "base_model": base_info,
                                 "dataset_license": dataset_license, "prompt_sha256": prompt.sha256}
        (tmp / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        log_training_run(settings, tmp, name=run_dir.name, config=resolved, log_history=state.log_history,
                         metrics=metrics)  # to MLflow tracking, with LLMOPS_REGISTRY_URI only
    return TrainResult(run_dir=run_dir, base_model_path=Path(base_path), metrics=metrics)
