"""A micro Llama model built in seconds, for tests and benchmarks that need a real causal LM.

    python -c "from training.micro import build_micro_model; build_micro_model('/tmp/micro')"

It is a real `LlamaForCausalLM` with a real BPE tokenizer, saved with `save_pretrained`, so
every stage (LoRA, merge, ONNX export, serving) runs on it exactly as on a hub model. The
weights are a seeded random init plus a few optimiser steps so that generations are not
degenerate; quality is not the point.
"""

from __future__ import annotations

from pathlib import Path

from training.tokenizer import python_reference_text, train_tokenizer


def build_micro_model(out_dir: str | Path, *, vocab_size: int = 512, hidden: int = 64, layers: int = 2,
                      heads: int = 4, kv_heads: int = 2, train_steps: int = 30, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = python_reference_text()[:120]
    tok = train_tokenizer(texts, vocab_size=vocab_size, model_max_length=256)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    if train_steps:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        ids = tok("\n".join(texts[:40]), return_tensors="pt").input_ids[0]
        block = 64
        n = (len(ids) // block) * block
        batches = ids[:n].view(-1, block)
        model.train()
        for step in range(train_steps):
            batch = batches[(step * 8) % len(batches):][:8]
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "README.md").write_text("---\nlicense: PSF-2.0\n---\n\n# micro test model\n\nRandom init plus a few "
                                   "steps on Python's reference text (pydoc_data.topics, PSF licence).\n")
    return out
