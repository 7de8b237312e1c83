"""The serving peers `llmops bench serve` times beside the project's loop, on the same token ids:
onnxruntime-genai (its own model builder and decode loop) and llama.cpp (llama-cpp-python on a GGUF).

    python -m onnxruntime_genai.models.builder -m DIR -i DIR -o OUT -p fp32 -e cpu -c CACHE   # what build_genai runs

Neither is in the serving images. scripts/install.sh installs onnxruntime-genai 0.10.0 with the test
extra (`--no-deps`: 0.18 needs transformers 5; 0.10.0 builds from a local folder with transformers
4.57). llama-cpp-python compiles from source (about 20 minutes on 2 cores), so it is opt-in:
`LLMOPS_EXTRAS=test,llamacpp bash scripts/install.sh`. A peer that is missing or fails is a row
that says why, never a silent skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from serving.hf_baseline import cut_at_eos

GENAI_INSTALL = "pip install --no-deps onnxruntime-genai==0.10.0"
LLAMA_CPP_INSTALL = "pip install llama-cpp-python==0.3.36 (compiles ~20 min)"
LLAMA_SERVER_INSTALL = "pip install 'llama-cpp-python[server]==0.3.36' (compiles ~20 min)"
"""Its OpenAI-compatible server, the peer of `llmops bench batching` (LLMOPS_EXTRAS=test,llamacpp installs both)."""
GENAI_BUILDS = {"fp32": [], "int4": ["--extra_options", "int4_accuracy_level=4"]}
"""onnxruntime-genai precisions and their extra builder flags (accuracy level 4: int8 activations,
the faster of its CPU int4 kernels)."""


def missing(module: str, install: str) -> str | None:
    """None when `module` imports, else the row's reason: how to install it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        return f"not installed: {install}"
    return None


def build_genai(model_dir: Path, work: Path, precisions: Sequence[str] = tuple(GENAI_BUILDS),
                timeout: float = 1800) -> dict[str, Path | str]:
    """Run the onnxruntime-genai model builder once per precision, all at once, each in its own process.

    Returns {precision: output folder, or the reason it failed}. The builders load the model
    themselves (transformers), so no torch state of this process leaks into them.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    running = {}
    for precision in precisions:
        out, log = work / f"genai-{precision}", work / f"genai-{precision}.log"
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", str(model_dir), "-i", str(model_dir),
               "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(work / f"genai-{precision}-cache"),
               *GENAI_BUILDS[precision]]
        with open(log, "w") as sink:
            running[precision] = (subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env), out, log)
    built: dict[str, Path | str] = {}
    for precision, (proc, out, log) in running.items():
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code == 0 and (out / "genai_config.json").is_file():
            built[precision] = out
        else:
            tail = " | ".join(line.strip() for line in log.read_text(errors="replace").splitlines()[-3:])
            built[precision] = f"model builder failed (exit {code}): {tail[-300:]}"
    return built


def unused_token_id(prompts: Sequence[Sequence[int]], vocab_size: int) -> int:
    """The smallest token id no prompt contains: onnxruntime-genai's padding id (see GenaiGenerator)."""
    used = {t for p in prompts for t in p}
    free = next((t for t in range(vocab_size) if t not in used), None)
    if free is None:
        raise ValueError("the prompts use every token id: none is free for padding")
    return free


class GenaiGenerator:
    """onnxruntime-genai's greedy decode on raw token ids (no chat template, no tokenizer).

    Two things this version (0.10.0, CPU) needs that the HF backends do not:
    - Right padding. Its GroupQueryAttention takes each row's length from the attention mask and
      expects the tokens first; left-padded rows of a batch generate different tokens (checked
      against torch on a micro model), right-padded rows generate torch's tokens.
    - A padding id that no prompt contains. It builds the attention mask as `input_ids !=
      pad_token_id`, and SmolLM2's pad is <|im_end|>, which every chat prompt contains; so the
      config's pad id is rewritten to an id the prompts never use.
    """

    def __init__(self, folder: Path, *, threads: int, pad_id: int) -> None:
        import onnxruntime_genai as og

        config_file = folder / "genai_config.json"
        config = json.loads(config_file.read_text())
        config["model"]["pad_token_id"] = pad_id
        config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
        config_file.write_text(json.dumps(config, indent=4))
        self.og, self.pad_id = og, pad_id
        self.model = og.Model(og.Config(str(folder)))

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, eos: int | None) -> list[list[int]]:
        """Greedy new ids per prompt, cut after eos (kept), like `hf_generate`."""
        import numpy as np

        longest = max(len(p) for p in prompt_ids)
        ids = np.full((len(prompt_ids), longest), self.pad_id, dtype=np.int32)  # (batch, longest prompt)
        for i, p in enumerate(prompt_ids):
            ids[i, :len(p)] = p
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=longest + max_new_tokens, do_sample=False, batch_size=len(prompt_ids))
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
        # Right-padded: every row's new tokens start after the longest prompt.
        return [cut_at_eos(generator.get_sequence(i)[longest:].tolist(), eos) for i in range(len(prompt_ids))]


class LlamaCppGenerator:
    """llama.cpp's greedy decode of one sequence at a time: llama-cpp-python's `Llama` has no batched
    generation, so its row runs at batch 1 and its roofline is a batch-1 roofline."""

    def __init__(self, gguf: Path, *, threads: int, n_ctx: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, eos: int | None) -> list[list[int]]:
        rows = []
        for prompt in prompt_ids:
            # Without a reset, `generate` keeps the KV cache of the previous prompt's common prefix
            # (the system turn) and skips that prefill; every other backend prefills in full.
            self.llm.reset()
            row: list[int] = []
            for token in self.llm.generate(list(prompt), top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
                row.append(int(token))
                if token == eos or len(row) == max_new_tokens:
                    break
            rows.append(row)
        return rows
