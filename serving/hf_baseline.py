"""The Hugging Face `generate` baselines the project's decode loop is measured and checked against:
`hf_generate` (greedy `model.generate` on a left-padded batch: export parity, the runtime tests) and
optimum's ORTModelForCausalLM (`llmops bench serve`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving.runtime import SamplingParams, _load_tokenizer, find_onnx_dir


# ---- optimum (bench only) ----------------------------------------------------------------------
class OptimumGenerator:
    """optimum's ORTModelForCausalLM.generate: what the bench compares the project's loop with."""

    backend = "optimum"

    def __init__(self, model_dir: Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForCausalLM

        onnx_dir = find_onnx_dir(model_dir)
        self.tokenizer = _load_tokenizer(onnx_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        self.model = ORTModelForCausalLM.from_pretrained(str(onnx_dir), session_options=options, use_cache=True,
                                                         use_io_binding=False)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[list[int]]:
        """Greedy token ids per prompt (eos kept), via `generate` on a left-padded batch."""
        return hf_generate(self.model, self.tokenizer, prompt_ids, params)


def hf_generate(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]],
                params: SamplingParams) -> list[list[int]]:
    """Greedy `model.generate` on a left-padded batch; returns the new ids per row, cut after eos."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    longest = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), longest), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompt_ids):
        ids[i, longest - len(p):] = torch.tensor(list(p))
        mask[i, longest - len(p):] = 1
    eos = None if params.ignore_eos else tokenizer.eos_token_id
    device = getattr(model, "device", None)
    if device is not None and str(device) != "cpu":  # e.g. the CUDA baseline of `llmops bench serve`
        ids, mask = ids.to(device), mask.to(device)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=params.max_new_tokens,
                             do_sample=False, num_beams=1, pad_token_id=pad, eos_token_id=eos,
                             temperature=None, top_p=None, top_k=None)
    return [cut_at_eos(row, eos) for row in out[:, longest:].tolist()]


def cut_at_eos(row: list[int], eos: int | None) -> list[int]:
    """New token ids up to and including the first eos (the whole row when there is none)."""
    return row[: row.index(eos) + 1] if eos is not None and eos in row else row
