"""Build the offline default base model: a BPE tokenizer and a small pre-trained Llama.

    llmops model bootstrap

The tokenizer is trained on Python's own reference text (`pydoc_data.topics`) plus the FAQ
training split; the model is pre-trained from a seeded init for a fixed number of steps on the
same text. The result is saved with `save_pretrained` into the local model store under the hash
of everything that determines it (config, text, library versions), so a second call is a cache hit.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from llmops.errors import InputError
from llmops.files import atomic_dir, sha256_bytes
from training.config import BootstrapConfig
from training.tokenizer import python_reference_text, train_tokenizer


@dataclass
class BootstrapResult:
    path: Path
    key: str
    cached: bool
    info: dict


def corpus_texts(train_jsonl: Path) -> list[str]:
    """Pre-training text: every pydoc topic, then each FAQ training pair as 'question\\nanswer'."""
    if not train_jsonl.is_file():
        raise InputError("the FAQ training split is missing; run `llmops data ingest python-faq` first",
                         file=str(train_jsonl))
    texts = python_reference_text()
    for line in train_jsonl.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            texts.append(f"{row['question']}\n{row['answer']}")
    return texts


def cache_key(cfg: BootstrapConfig, texts: list[str]) -> str:
    import tokenizers
    import torch
    import transformers

    text_hash = sha256_bytes("\x1e".join(texts).encode("utf-8"))
    material = json.dumps({"config": cfg.model_dump(), "text": text_hash, "torch": torch.__version__,
                           "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                           "recipe": 1}, sort_keys=True)
    return sha256_bytes(material.encode())[:16]


def bootstrap(cfg: BootstrapConfig, train_jsonl: Path, store: Path, *, force: bool = False,
              progress: bool = True) -> BootstrapResult:
    texts = corpus_texts(train_jsonl)
    key = cache_key(cfg, texts)
    target = Path(store) / f"default-{key}"
    if (target / "bootstrap.json").is_file() and not force:
        info = json.loads((target / "bootstrap.json").read_text())
        write_model_card(target, info)
        return BootstrapResult(target, key, True, info)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    with atomic_dir(target) as tmp:
        info = pretrain(cfg, texts, tmp, progress=progress)
        info["key"] = key
        (tmp / "bootstrap.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        write_model_card(tmp, info)
    return BootstrapResult(target, key, False, info)


def write_model_card(folder: Path, info: dict) -> None:
    """A Hugging Face model card (README.md with YAML front matter) so the licence check can read it."""
    if (folder / "README.md").is_file():
        return
    cfg = info.get("config", {})
    (folder / "README.md").write_text(
        "---\nlicense: PSF-2.0\nlibrary_name: transformers\npipeline_tag: text-generation\n"
        "tags: [llama, offline, llmops-default]\n---\n\n"
        f"# llmops default base model ({info.get('key', '')})\n\n"
        f"A {info.get('parameters', 0):,}-parameter Llama-architecture causal LM pre-trained from a seeded init "
        f"for {cfg.get('max_steps')} steps on Python's own reference text (`pydoc_data.topics`) and the "
        "Python FAQ training split, with a byte-level BPE tokenizer trained on the same text. Built by "
        "`llmops model bootstrap`; PSF licence, like its training text. It is a test-scale model: it "
        "does not follow instructions reliably.\n")


def pretrain(cfg: BootstrapConfig, texts: list[str], out: Path, *, progress: bool = True) -> dict:
    import torch
    from tqdm.auto import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    tok = train_tokenizer(texts, vocab_size=cfg.vocab_size, model_max_length=cfg.context_length)
    eos = tok.eos_token_id
    ids: list[int] = []
    # The fast backend directly: no per-call special tokens and no max-length warning for long topics.
    for enc in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eos)
    n_blocks = len(ids) // cfg.block_size
    data = torch.tensor(ids[: n_blocks * cfg.block_size]).view(n_blocks, cfg.block_size)  # (blocks, block)

    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.context_length,
        bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True, rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    data = data.to(device)
    # bf16 autocast on CUDA (weights and optimiser state stay fp32); plain fp32 on CPU.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, cfg.max_steps // 20)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to 10% of the peak
        if step < warmup:
            return cfg.learning_rate * (step + 1) / warmup
        frac = (step - warmup) / max(1, cfg.max_steps - warmup)
        return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    losses: list[tuple[int, float]] = []
    start = time.perf_counter()
    bar = tqdm(range(cfg.max_steps), desc="pre-train", disable=not progress, mininterval=2)
    for step in bar:
        rows = torch.randint(0, n_blocks, (cfg.batch_size,), generator=gen).to(device)
        batch = data[rows]  # (batch, block)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with autocast:
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 20 == 0 or step == cfg.max_steps - 1:
            losses.append((step, round(loss.item(), 4)))
            bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - start
    model.eval()
    model.to("cpu")
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    tokens = cfg.max_steps * cfg.batch_size * cfg.block_size
    return {
        "config": cfg.model_dump(), "parameters": n_params, "corpus_tokens": len(ids),
        "train_tokens": tokens, "seconds": round(seconds, 1), "tokens_per_second": round(tokens / seconds),
        "final_loss": losses[-1][1], "loss_curve": losses, "device": device, "license": "PSF-2.0",
        "license_note": "weights derived only from Python documentation text (PSF licence)",
    }
