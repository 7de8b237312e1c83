"""Generation speed of every backend on the same model and prompts, in one run, as ratios; and the
HTTP server under concurrent streams (continuous batching).

    llmops bench serve --n-prompts 8 --max-new-tokens 32                 # the CLI builds a micro model first
    llmops bench serve --model runs/merged --out runs/bench-serve.json   # a real merged HF model
    llmops bench batching --model exports/v1 --streams 16                # a real server, 1 vs 16 streams

Backends: torch eager (`generate`), optimum ORTModelForCausalLM (`generate`), and the project's
ORT loop on the fp32 export and the weight-only int8 and int4 ones (timed even when under the
servable agreement floor; the agreement column says how far). Each runs the same left-padded batches of greedy decoding
after one warm-up pass; tokens/s = generated tokens / wall seconds, best of `repeats`. Runs on a
shared machine vary by up to 2x, so compare the ratios within one run, not absolute numbers
across runs. Greedy tokens are compared with torch's for every backend.
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

QUANTISED = ("int8", "int4")
"""The weight-only export variants the bench times beside fp32 (serving/export.py)."""


@dataclass
class BackendResult:
    backend: str
    tokens: int
    seconds: float
    tokens_per_s: float
    matches_torch: bool
    agreement_pct: float


def _time_best(run: Callable[[], list[list[int]]], repeats: int) -> tuple[float, list[list[int]]]:
    run()  # warm-up: session initialisation, allocator growth
    best, out = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_serve(model_dir: str | Path, *, n_prompts: int = 8, max_new_tokens: int = 32,
                batch_size: int | None = None, repeats: int = 3, threads: int | None = None,
                work_dir: str | Path | None = None) -> dict[str, Any]:
    """Measure every backend; returns {"results": [...], "ratios": {...}, "setup": {...}}."""
    import torch

    from serving.export import export_model, serving_prompt, token_agreement
    from serving.hf_baseline import OptimumGenerator, hf_generate
    from serving.runtime import OrtGenerator, SamplingParams, TorchGenerator

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    tmp = tempfile.TemporaryDirectory(prefix="llmops-bench-")
    work = Path(work_dir) if work_dir else Path(tmp.name)
    model_dir = Path(model_dir)
    prompt = serving_prompt(model_dir)
    examples = [{"question": q} for q in (
        "How do I make a Python script executable on Unix?", "What is a lambda?",
        "How do I copy a file in Python?", "Why are default arguments shared between calls?",
        "How do I read a file line by line?", "What is the difference between a list and a tuple?",
        "How can I find the methods of an object?", "How do I convert a string to a number?")]
    from llmops.prompts import chat_format_of

    chat = chat_format_of(model_dir)
    texts = [prompt.render(chat, **examples[i % len(examples)]) for i in range(n_prompts)]
    export_dir = work / "export"
    export = export_model(model_dir, export_dir, ["fp32", *QUANTISED], texts[:4], prompt=prompt,
                          parity_n=4, max_new_tokens=8)
    # A variant under the servable agreement floor is still timed: the table says what it would cost.
    quantised = {d: export.variants.get(d) or export.rejected[d] for d in QUANTISED}
    params = SamplingParams(max_new_tokens=max_new_tokens)
    batch = batch_size or n_prompts

    torch_gen = TorchGenerator(model_dir)
    ids = [torch_gen.encode(t) for t in texts]
    batches = [ids[i:i + batch] for i in range(0, len(ids), batch)]

    def run_hf(model: Any, tokenizer: Any) -> Callable[[], list[list[int]]]:
        return lambda: [row for b in batches for row in hf_generate(model, tokenizer, b, params)]

    def run_loop(gen: Any) -> Callable[[], list[list[int]]]:
        return lambda: [c.token_ids for b in batches for c in gen.generate_ids(b, params)]

    def run_optimum() -> Callable[[], list[list[int]]]:
        optimum = OptimumGenerator(export.variants["fp32"], threads=threads)
        return run_hf(optimum.model, optimum.tokenizer)

    # Each backend is built just before it is timed, so no other backend's thread pool is alive
    # beside it (ORT's spinning intra-op threads would steal torch's cores on a small machine).
    backends: list[tuple[str, Callable[[], Callable[[], list[list[int]]]]]] = [
        ("torch eager (HF generate)", lambda: run_hf(torch_gen.model, torch_gen.tokenizer)),
        ("optimum ORTModelForCausalLM", run_optimum),
        ("ORT loop fp32", lambda: run_loop(OrtGenerator(export.variants["fp32"], threads=threads))),
        *[(f"ORT loop {d}", lambda d=d: run_loop(OrtGenerator(quantised[d], threads=threads))) for d in QUANTISED],
    ]
    if torch.cuda.is_available():
        # The GPU baseline: the same HF model and greedy decoding on CUDA (fp32, like the others).
        import copy

        def run_cuda() -> Callable[[], list[list[int]]]:
            model = copy.deepcopy(torch_gen.model).to("cuda")
            return run_hf(model, torch_gen.tokenizer)

        backends.append(("torch eager CUDA (HF generate)", run_cuda))
    results: list[BackendResult] = []
    reference: list[list[int]] = []
    load_before = os.getloadavg()[0]  # other processes on the machine skew absolute numbers
    for name, build in backends:
        seconds, out = _time_best(build(), repeats)
        reference = reference or out
        tokens = sum(len(r) for r in out)
        results.append(BackendResult(backend=name, tokens=tokens, seconds=seconds, tokens_per_s=tokens / seconds,
                                     matches_torch=out == reference,
                                     agreement_pct=token_agreement(reference, out)))
    speed = {r.backend: r.tokens_per_s for r in results}
    ratios = {
        "ORT loop fp32 / torch eager": speed["ORT loop fp32"] / speed["torch eager (HF generate)"],
        "ORT loop fp32 / optimum": speed["ORT loop fp32"] / speed["optimum ORTModelForCausalLM"],
        **{f"ORT loop {d} / ORT loop fp32": speed[f"ORT loop {d}"] / speed["ORT loop fp32"] for d in QUANTISED},
        "optimum / torch eager": speed["optimum ORTModelForCausalLM"] / speed["torch eager (HF generate)"],
    }
    if "torch eager CUDA (HF generate)" in speed:
        ratios["ORT loop fp32 (CPU) / torch eager CUDA"] = speed["ORT loop fp32"] / speed["torch eager CUDA (HF generate)"]
    n_params = sum(p.numel() for p in torch_gen.model.parameters())
    setup = {"model": str(model_dir), "parameters": n_params, "prompts": n_prompts, "batch_size": batch,
             "prompt_tokens_mean": sum(map(len, ids)) / len(ids), "max_new_tokens": max_new_tokens,
             "threads": threads, "repeats": repeats, "cpu": platform.processor() or platform.machine(),
             "cores": os.cpu_count(), "torch": torch.__version__,
             "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "parity_fp32_pct": export.agreement["fp32"],
             "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    tmp.cleanup()
    return {"setup": setup, "results": [asdict(r) for r in results], "ratios": ratios}


# ---- the HTTP server under concurrent streams --------------------------------------------------
QUESTIONS = ("How do I make a Python script executable on Unix?", "What is a lambda?", "How do I copy a file in Python?",
             "Why are default arguments shared between calls?", "How do I read a file line by line?",
             "What is the difference between a list and a tuple?", "How can I find the methods of an object?",
             "How do I convert a string to a number?")


@dataclass
class LevelResult:
    streams: int
    requests: int
    errors: int
    tokens: int
    seconds: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p95_ms: float


def _served_folder(model_dir: Path, work: Path) -> Path:
    """An export root or model.onnx folder as it is; a Hugging Face folder exported to fp32 first."""
    from llmops.errors import InputError
    from serving.export import export_model
    from serving.runtime import find_onnx_dir

    try:
        find_onnx_dir(model_dir)
        return model_dir
    except InputError:
        if not (model_dir / "config.json").is_file():
            raise InputError("neither an ONNX export (model.onnx, or fp32/model.onnx) nor a Hugging Face "
                             "model folder (config.json)", file=str(model_dir)) from None
    return export_model(model_dir, work / "export", ["fp32"], parity_n=2, max_new_tokens=8).out_dir


def _stream_once(client: Any, url: str, question: str, max_tokens: int) -> tuple[float, int]:
    """One streamed chat request: (seconds to the first content or finish chunk, completion tokens)."""
    import json

    body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, tokens = None, None
    with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if first is None and (choice["delta"].get("content") or choice["finish_reason"]):
                    first = time.perf_counter() - start
    if first is None or tokens is None:
        raise RuntimeError("the stream ended without a finish chunk and usage")
    return first, tokens


def _run_level(url: str, streams: int, requests_per_stream: int, max_tokens: int) -> LevelResult:
    """`streams` clients at once, each sending `requests_per_stream` streamed requests one after another."""
    import threading

    import httpx
    import numpy as np

    ttfts: list[float] = []
    tokens: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(streams + 1)

    def client(k: int) -> None:
        with httpx.Client(timeout=600) as http:
            barrier.wait()
            for r in range(requests_per_stream):
                try:
                    first, n = _stream_once(http, url, QUESTIONS[(k + r) % len(QUESTIONS)], max_tokens)
                except (httpx.HTTPError, RuntimeError) as exc:
                    with lock:
                        errors.append(str(exc))
                    continue
                with lock:
                    ttfts.append(first)
                    tokens.append(n)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(streams)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    p50, p95 = (float(np.percentile(ttfts, q)) * 1000 for q in (50, 95)) if ttfts else (float("nan"),) * 2
    return LevelResult(streams=streams, requests=streams * requests_per_stream, errors=len(errors),
                       tokens=sum(tokens), seconds=seconds, tokens_per_s=sum(tokens) / seconds,
                       ttft_p50_ms=p50, ttft_p95_ms=p95)


def bench_batching(model_dir: str | Path, *, streams: int = 16, requests_per_stream: int = 2, max_tokens: int = 32,
                   threads: int | None = None, work_dir: str | Path | None = None) -> dict[str, Any]:
    """Drive a real `llmops serve` with 1 stream, then `streams` concurrent streams, in one run.

    Every request is a streamed greedy chat request of at most `max_tokens` tokens. Aggregate
    tokens/s = completion tokens of a level / its wall seconds; TTFT = time to the first content
    (or finish) chunk. Returns {"setup", "levels", "ratios", "goals"}; the ratios compare the levels
    of this run only (absolute numbers vary with the machine's load).
    """
    import httpx

    from serving.app import running_server

    tmp = tempfile.TemporaryDirectory(prefix="llmops-bench-batching-")
    try:
        served = _served_folder(Path(model_dir), Path(work_dir) if work_dir else Path(tmp.name))
        load_before = os.getloadavg()[0]
        with running_server(served, model_id="bench", threads=threads, timeout=300) as url:
            _run_level(url, 1, 1, max_tokens)  # warm-up: session, allocator, the first prefill
            levels = [_run_level(url, n, requests_per_stream, max_tokens) for n in (1, streams)]
            metrics = httpx.get(url + "/metrics", timeout=30).text
    finally:
        tmp.cleanup()
    one, many = levels
    max_batch = next((float(line.split()[-1]) for line in metrics.splitlines()
                      if line.startswith("llmops_batch_rows_max ")), 0.0)
    ratios = {f"tokens/s at {streams} streams / 1 stream": many.tokens_per_s / one.tokens_per_s if one.tokens_per_s
              else float("nan"),
              f"TTFT p95 at {streams} streams / 1 stream": many.ttft_p95_ms / one.ttft_p95_ms if one.ttft_p95_ms
              else float("nan")}
    setup = {"model": str(model_dir), "served": str(served), "streams": streams,
             "requests_per_stream": requests_per_stream, "max_tokens": max_tokens, "threads": threads,
             "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
             "largest_batch_seen": int(max_batch),
             "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    goals = {f"tokens/s at {streams} streams / 1 stream": ">= 4", f"TTFT p95 at {streams} streams / 1 stream": "<= 2"}
    return {"setup": setup, "levels": [asdict(level) for level in levels], "ratios": ratios, "goals": goals}


def batching_table(bench: dict[str, Any]) -> str:
    s = bench["setup"]
    lines = [f"Model {s['model']}, greedy chat streams of at most {s['max_tokens']} tokens, {s['requests_per_stream']} "
             f"requests per stream, largest decode batch seen {s['largest_batch_seen']}, {s['cores']} cores "
             f"({s['cpu']}); 1-min load average before/after: {s['load_avg_1min'][0]}/{s['load_avg_1min'][1]}.", "",
             "| streams | requests | errors | tokens | seconds | tokens/s | TTFT p50 ms | TTFT p95 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for lv in bench["levels"]:
        lines.append(f"| {lv['streams']} | {lv['requests']} | {lv['errors']} | {lv['tokens']} | {lv['seconds']:.2f} | "
                     f"{lv['tokens_per_s']:.1f} | {lv['ttft_p50_ms']:.0f} | {lv['ttft_p95_ms']:.0f} |")
    lines += ["", "| ratio | value | goal |", "|---|---|---|"]
    lines += [f"| {k} | {v:.2f}x | {bench['goals'].get(k, '')} |" for k, v in bench["ratios"].items()]
    return "\n".join(lines)


def markdown_table(bench: dict[str, Any]) -> str:
    s = bench["setup"]
    lines = [f"Model {s['model']} ({s['parameters'] / 1e6:.2f}M params), {s['prompts']} prompts "
             f"(mean {s['prompt_tokens_mean']:.0f} tokens) in batches of {s['batch_size']}, "
             f"{s['max_new_tokens']} greedy new tokens, {s['threads']} threads on {s['cores']} cores "
             f"({s['cpu']}), best of {s['repeats']}; 1-min load average before/after: "
             f"{s['load_avg_1min'][0]}/{s['load_avg_1min'][1]}.", "",
             "| backend | tokens | seconds | tokens/s | vs torch | greedy tokens = torch |", "|---|---|---|---|---|---|"]
    base = bench["results"][0]["tokens_per_s"]
    for r in bench["results"]:
        same = "yes" if r["matches_torch"] else f"no ({r['agreement_pct']:.1f}% agree)"
        lines.append(f"| {r['backend']} | {r['tokens']} | {r['seconds']:.3f} | {r['tokens_per_s']:.0f} | "
                     f"{r['tokens_per_s'] / base:.2f}x | {same} |")
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f}x |" for k, v in bench["ratios"].items()]
    return "\n".join(lines)


def write_bench(bench: dict[str, Any], out: Path) -> None:
    atomic_write_json(Path(out), bench)


