"""Generation speed of every backend on the same model and prompts, in one run, as ratios and as a
share of the memory-bandwidth roofline. The HTTP server under concurrent streams is serving/bench_batching.py.

    llmops bench serve --n-prompts 8 --max-new-tokens 32                 # the CLI builds a micro model first
    llmops bench serve --model runs/merged --out runs/bench-serve.json   # a real merged HF model

Backends: torch eager (`generate`), optimum ORTModelForCausalLM (`generate`, on optimum's own export,
as a user who picks optimum runs it), the project's ORT loop on the fp32 export (its serving graph:
fusions and last-position logits, serving/export.py) and the weight-only int8 and int4 ones (timed even when under the servable
agreement floor; the agreement column says how far), and the peers of serving/peers.py:
onnxruntime-genai fp32 and int4 (its model builder, run on the same folder) and llama.cpp on a GGUF
(batch 1; when llama-cpp-python is installed and a GGUF is given). Each runs the same token ids in
the same batches, greedy, after one warm-up pass; tokens/s = generated tokens / wall seconds, best
of `repeats`. Runs on a shared machine vary by up to 2x, so compare the ratios within one run, not
absolute numbers across runs. Greedy tokens are compared with torch's for every backend.

Roofline: a decode step reads every weight once whatever the batch, so memory bandwidth bounds it at

    roofline tokens/s = batch * bandwidth / weight bytes      # e.g. 8 * 28e9 B/s / 538e6 B = 416 tokens/s

- bandwidth: measured in the same run, a 1 GiB numpy copy split over the bench's threads; bytes
  moved = read + write = 2 GiB; best of 3.
- batch: the mean rows per decode step (prompts / batches; 1 for llama.cpp).
- weight bytes: what one step reads of that variant: torch's fp32 parameters (4 bytes each), the
  ONNX initializers as stored (int8/int4 blocks plus scales), the GGUF tensors. A table that is only
  gathered from (an untied input embedding) counts 0: a step reads `batch` rows of it.
share = measured tokens/s / roofline tokens/s. Prefill time and KV-cache reads are outside the
bound, so the share understates how close decode gets; a micro model's weights fit in cache, so
its shares say nothing about memory.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmops.files import atomic_write_json
from llmops.prompts import chat_format_of
from serving import peers
from serving.export import export_model, optimum_export, serving_prompt, token_agreement
from serving.hf_baseline import OptimumGenerator, hf_generate
from serving.runtime import OrtGenerator, SamplingParams, TorchGenerator

QUANTISED = ("int8", "int4")
"""The weight-only export variants the bench times beside fp32 (serving/export.py)."""
BANDWIDTH_BYTES = 1 << 30
"""Size of the copy that measures memory bandwidth: far above any CPU's last-level cache."""
QUESTIONS = ("How do I make a Python script executable on Unix?", "What is a lambda?", "How do I copy a file in Python?",
             "Why are default arguments shared between calls?", "How do I read a file line by line?",
             "What is the difference between a list and a tuple?", "How can I find the methods of an object?",
             "How do I convert a string to a number?")
"""The questions of both benches' prompts, in this order."""
NO_GGUF = ("no GGUF: pass --gguf FILE, or bench a `llmops model prepare` base model folder (its original GGUF "
           "is used)")


@dataclass
class BackendResult:
    backend: str
    batch_size: float
    """Mean rows per decode step."""
    tokens: int
    seconds: float | None
    tokens_per_s: float | None
    matches_torch: bool | None
    agreement_pct: float | None
    weight_bytes: int | None
    """What one decode step reads (module docstring)."""
    roofline_tokens_per_s: float | None
    roofline_share: float | None
    note: str = ""
    """Why a row has no numbers (then they are None), or how it differs from the others."""


# ---- the roofline ------------------------------------------------------------------------------
def measure_bandwidth(nbytes: int = BANDWIDTH_BYTES, threads: int = 1, repeats: int = 3) -> float:
    """Bytes/s one copy of `nbytes` moves (read + write), split over `threads` threads, best of `repeats`."""
    import itertools
    import threading

    import numpy as np

    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    bounds = [k * nbytes // threads for k in range(threads + 1)]

    def copy() -> float:
        # np.copyto releases the GIL, so the slices copy in parallel.
        workers = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b]))
                   for a, b in itertools.pairwise(bounds)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.perf_counter() - start

    copy()  # warm-up: the first write to dst faults its pages in
    return 2 * nbytes / min(copy() for _ in range(repeats))


def roofline_tokens_per_s(batch: float, bandwidth: float, weight_bytes: int) -> float:
    """Decode's bandwidth bound: each step reads `weight_bytes` once and yields `batch` tokens."""
    return batch * bandwidth / weight_bytes


def torch_weight_bytes(model: Any) -> int:
    """Bytes of the parameters (tied ones once), less an untied input embedding (only gathered from)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    if head is None or head.weight is not embed:
        total -= embed.numel() * embed.element_size()
    return total


def onnx_weight_bytes(folder: Path) -> int:
    """Bytes of the initializers of `folder`/model.onnx as stored, less the tables a step only looks rows up
    in: Gather's data (an untied embedding) and RotaryEmbedding's cos/sin caches (indexed by position)."""
    import math

    import onnx

    graph = onnx.load(str(Path(folder) / "model.onnx"), load_external_data=False).graph
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            lookup = (node.op_type == "Gather" and k == 0) or (node.op_type == "RotaryEmbedding" and k >= 2)
            readers.setdefault(name, set()).add("gather" if lookup else "other")
    four_bit = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    total = 0
    for t in graph.initializer:
        if readers.get(t.name) == {"gather"}:
            continue
        bits = 4 if t.data_type in four_bit else 8 * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        total += (math.prod(t.dims) * bits + 7) // 8
    return total


def gguf_weight_bytes(path: Path) -> int:
    """Bytes of the GGUF's tensors as stored; token_embd only when it is also the output head (tied)."""
    from gguf import GGUFReader

    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(str(path)).tensors}
    if "output.weight" in tensors:
        tensors.pop("token_embd.weight", None)
    return sum(tensors.values())


# ---- generation speed of every backend ---------------------------------------------------------
def _time_best(run: Callable[[], list[list[int]]], repeats: int) -> tuple[float, list[list[int]]]:
    run()  # warm-up: session initialisation, allocator growth
    best, out = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


@dataclass
class _Backend:
    name: str
    build: Callable[[], Callable[[], list[list[int]]]] | None
    """Returns the timed run; None when the backend cannot run here (then `note` says why)."""
    batch: float
    weight_bytes: Callable[[], int] | None
    note: str = ""
    on_cpu: bool = True
    """False for the GPU baseline: the CPU's bandwidth does not bound it."""
    peer: bool = False
    """A third-party peer: when it fails, its row says why instead of failing the bench."""


def _no_numbers(b: _Backend, why: str) -> BackendResult:
    return BackendResult(backend=b.name, batch_size=b.batch, tokens=0, seconds=None, tokens_per_s=None,
                         matches_torch=None, agreement_pct=None, weight_bytes=None, roofline_tokens_per_s=None,
                         roofline_share=None, note=why)


def bench_serve(model_dir: str | Path, *, n_prompts: int = 8, max_new_tokens: int = 32,
                batch_size: int | None = None, repeats: int = 3, threads: int | None = None,
                work_dir: str | Path | None = None, gguf: str | Path | None = None,
                bandwidth_bytes: int = BANDWIDTH_BYTES) -> dict[str, Any]:
    """Measure every backend; returns {"results": [...], "ratios": {...}, "setup": {...}}.

    `gguf`: this model as a GGUF file, for the llama.cpp row (`llmops bench serve` finds the
    original GGUF of a `llmops model prepare` folder). Without it, or without llama-cpp-python,
    or when an onnxruntime-genai build fails, that row says why and has no numbers.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    tmp = tempfile.TemporaryDirectory(prefix="llmops-bench-")
    work = Path(work_dir) if work_dir else Path(tmp.name)
    model_dir = Path(model_dir)
    prompt = serving_prompt(model_dir)
    examples = [{"question": q} for q in QUESTIONS]
    chat = chat_format_of(model_dir)
    texts = [prompt.render(chat, **examples[i % len(examples)]) for i in range(n_prompts)]
    # onnxruntime-genai's builders run in their own processes while this one exports; both are done
    # before anything is timed.
    genai_missing = peers.missing("onnxruntime_genai", peers.GENAI_INSTALL)
    with ThreadPoolExecutor(1) as pool:
        genai_builds = None if genai_missing else pool.submit(peers.build_genai, model_dir, work)
        export_dir = work / "export"
        export = export_model(model_dir, export_dir, ["fp32", *QUANTISED], texts[:4], prompt=prompt,
                              parity_n=4, max_new_tokens=8)
        # optimum runs on its own export, as a user who picks it would; the loop serves the edited graph.
        optimum_dir = work / "optimum"
        optimum_export(model_dir, optimum_dir)
        genai: dict[str, Path | str] = genai_builds.result() if genai_builds else {}
    # A variant under the servable agreement floor is still timed: the table says what it would cost.
    quantised = {d: export.variants.get(d) or export.rejected[d] for d in QUANTISED}
    params = SamplingParams(max_new_tokens=max_new_tokens)
    batch = batch_size or n_prompts

    torch_gen = TorchGenerator(model_dir)
    eos = torch_gen.tokenizer.eos_token_id
    ids = [torch_gen.encode(t) for t in texts]
    batches = [ids[i:i + batch] for i in range(0, len(ids), batch)]
    mean_batch = len(ids) / len(batches)

    def run_hf(model: Any, tokenizer: Any) -> Callable[[], list[list[int]]]:
        return lambda: [row for b in batches for row in hf_generate(model, tokenizer, b, params)]

    def run_loop(gen: Any) -> Callable[[], list[list[int]]]:
        return lambda: [c.token_ids for b in batches for c in gen.generate_ids(b, params)]

    def run_peer(gen: Any, peer_batches: list[list[list[int]]]) -> Callable[[], list[list[int]]]:
        return lambda: [row for b in peer_batches for row in gen.generate_ids(b, max_new_tokens, eos)]

    def run_optimum() -> Callable[[], list[list[int]]]:
        optimum = OptimumGenerator(optimum_dir, threads=threads)
        return run_hf(optimum.model, optimum.tokenizer)

    def quantised_loop(dtype: str) -> _Backend:
        folder = quantised[dtype]
        return _Backend(f"ORT loop {dtype}", lambda: run_loop(OrtGenerator(folder, threads=threads)), mean_batch,
                        lambda: onnx_weight_bytes(folder))

    def genai_peer(precision: str, folder: Path) -> _Backend:
        return _Backend(f"onnxruntime-genai {precision}",
                        lambda: run_peer(peers.GenaiGenerator(folder, threads=threads, pad_id=pad_id), batches),
                        mean_batch, lambda: onnx_weight_bytes(folder), peer=True)

    pad_id = peers.unused_token_id(ids, torch_gen.model.config.vocab_size)
    fp32 = export.variants["fp32"]
    # Each backend is built just before it is timed, so no other backend's thread pool is alive
    # beside it (ORT's spinning intra-op threads would steal torch's cores on a small machine).
    backends = [
        _Backend("torch eager (HF generate)", lambda: run_hf(torch_gen.model, torch_gen.tokenizer), mean_batch,
                 lambda: torch_weight_bytes(torch_gen.model)),
        _Backend("optimum ORTModelForCausalLM", run_optimum, mean_batch, lambda: onnx_weight_bytes(optimum_dir)),
        _Backend("ORT loop fp32", lambda: run_loop(OrtGenerator(fp32, threads=threads)), mean_batch,
                 lambda: onnx_weight_bytes(fp32)),
        *[quantised_loop(d) for d in QUANTISED],
    ]
    for precision in peers.GENAI_BUILDS:
        built = genai.get(precision, genai_missing)
        if isinstance(built, Path):
            backends.append(genai_peer(precision, built))
        else:
            backends.append(_Backend(f"onnxruntime-genai {precision}", None, mean_batch, None, str(built), peer=True))
    llama_missing = peers.missing("llama_cpp", peers.LLAMA_CPP_INSTALL) or (None if gguf else NO_GGUF)
    if gguf and not llama_missing:
        gguf_file, n_ctx = Path(gguf), max(map(len, ids)) + max_new_tokens + 1
        backends.append(_Backend(
            "llama.cpp GGUF", lambda: run_peer(peers.LlamaCppGenerator(gguf_file, threads=threads, n_ctx=n_ctx),
                                               [[p] for p in ids]),
            1.0, lambda: gguf_weight_bytes(gguf_file),
            f"batch 1: llama-cpp-python generates one sequence at a time; {gguf_file.name}", peer=True))
    else:
        backends.append(_Backend("llama.cpp GGUF", None, 1.0, None, str(llama_missing), peer=True))
    if torch.cuda.is_available():
        # The GPU baseline: the same HF model and greedy decoding on CUDA (fp32, like the others).
        import copy

        def run_cuda() -> Callable[[], list[list[int]]]:
            model = copy.deepcopy(torch_gen.model).to("cuda")
            return run_hf(model, torch_gen.tokenizer)

        backends.append(_Backend("torch eager CUDA (HF generate)", run_cuda, mean_batch,
                                 lambda: torch_weight_bytes(torch_gen.model), "GPU: no CPU roofline", on_cpu=False))
    bandwidth = measure_bandwidth(bandwidth_bytes, threads)
    results: list[BackendResult] = []
    reference: list[list[int]] = []
    load_before = os.getloadavg()[0]  # other processes on the machine skew absolute numbers
    for b in backends:
        if b.build is None:
            results.append(_no_numbers(b, b.note))
            continue
        try:
            seconds, out = _time_best(b.build(), repeats)
        except Exception as exc:
            if not b.peer:
                raise
            results.append(_no_numbers(b, f"failed: {type(exc).__name__}: {exc}"[:300]))
            continue
        reference = reference or out
        tokens = sum(len(r) for r in out)
        weight_bytes = b.weight_bytes() if b.weight_bytes else None
        roofline = roofline_tokens_per_s(b.batch, bandwidth, weight_bytes) if weight_bytes and b.on_cpu else None
        results.append(BackendResult(
            backend=b.name, batch_size=b.batch, tokens=tokens, seconds=seconds, tokens_per_s=tokens / seconds,
            matches_torch=out == reference, agreement_pct=token_agreement(reference, out),
            weight_bytes=weight_bytes, roofline_tokens_per_s=roofline,
            roofline_share=tokens / seconds / roofline if roofline else None, note=b.note))
    speed = {r.backend: r.tokens_per_s for r in results if r.tokens_per_s}
    pairs = [("ORT loop fp32", "torch eager (HF generate)", "ORT loop fp32 / torch eager"),
             ("ORT loop fp32", "optimum ORTModelForCausalLM", "ORT loop fp32 / optimum"),
             *[(f"ORT loop {d}", "ORT loop fp32", f"ORT loop {d} / ORT loop fp32") for d in QUANTISED],
             ("optimum ORTModelForCausalLM", "torch eager (HF generate)", "optimum / torch eager"),
             *[(f"ORT loop {p}", f"onnxruntime-genai {p}", f"ORT loop {p} / onnxruntime-genai {p}")
               for p in peers.GENAI_BUILDS],
             ("ORT loop fp32", "torch eager CUDA (HF generate)", "ORT loop fp32 (CPU) / torch eager CUDA")]
    ratios = {label: speed[a] / speed[b] for a, b, label in pairs if a in speed and b in speed}
    n_params = sum(p.numel() for p in torch_gen.model.parameters())
    setup = {"model": str(model_dir), "parameters": n_params, "prompts": n_prompts, "batch_size": batch,
             "prompt_tokens_mean": sum(map(len, ids)) / len(ids), "max_new_tokens": max_new_tokens,
             "threads": threads, "repeats": repeats, "cpu": platform.processor() or platform.machine(),
             "cores": os.cpu_count(), "torch": torch.__version__,
             "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "parity_fp32_pct": export.agreement["fp32"],
             "bandwidth_gb_s": bandwidth / 1e9, "bandwidth_copy_bytes": bandwidth_bytes,
             "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    tmp.cleanup()
    return {"setup": setup, "results": [asdict(r) for r in results], "ratios": ratios}


# ---- the HTTP server under concurrent streams --------------------------------------------------


def markdown_table(bench: dict[str, Any]) -> str:
    s = bench["setup"]
    lines = [f"Model {s['model']} ({s['parameters'] / 1e6:.2f}M params), {s['prompts']} prompts "
             f"(mean {s['prompt_tokens_mean']:.0f} tokens) in batches of {s['batch_size']}, "
             f"{s['max_new_tokens']} greedy new tokens, {s['threads']} threads on {s['cores']} cores "
             f"({s['cpu']}), best of {s['repeats']}; 1-min load average before/after: "
             f"{s['load_avg_1min'][0]}/{s['load_avg_1min'][1]}. Memory bandwidth {s['bandwidth_gb_s']:.1f} GB/s "
             f"(a {s['bandwidth_copy_bytes'] / 2**20:.0f} MiB numpy copy, read + write, best of 3); "
             "roofline tokens/s = batch x bandwidth / weight bytes.", "",
             "| backend | batch | tokens | seconds | tokens/s | vs torch | weights MB | roofline tokens/s "
             "| share of roofline | greedy tokens = torch | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = bench["results"][0]["tokens_per_s"]

    def num(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    for r in bench["results"]:
        if r["tokens_per_s"] is None:
            lines.append(f"| {r['backend']} | {r['batch_size']:g} | | | n/a | | | | | | {r['note']} |")
            continue
        same = "yes" if r["matches_torch"] else f"no ({r['agreement_pct']:.1f}% agree)"
        weights = None if r["weight_bytes"] is None else r["weight_bytes"] / 1e6
        lines.append(f"| {r['backend']} | {r['batch_size']:g} | {r['tokens']} | {r['seconds']:.3f} | "
                     f"{r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base:.2f}x | {num(weights, '.2f')} | "
                     f"{num(r['roofline_tokens_per_s'], '.0f')} | {num(r['roofline_share'], '.1%')} | {same} | "
                     f"{r['note']} |")
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f}x |" for k, v in bench["ratios"].items()]
    return "\n".join(lines)


def write_bench(bench: dict[str, Any], out: Path) -> None:
    atomic_write_json(Path(out), bench)


