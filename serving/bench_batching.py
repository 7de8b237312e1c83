"""The HTTP server under concurrent streams (continuous batching, serving/batching.py), in one run.

    llmops bench batching --model exports/v1 --streams 16    # a real server, 1 vs 16 streams
                                                             # (and llama.cpp's server on --gguf, when installed)

Aggregate tokens/s and TTFT p95 of a real `llmops serve` at 1 and N streamed chat streams, the same
levels on a server without its prefix cache (LLMOPS_PREFIX_CACHE=0), and llama.cpp's server as the
peer; the ratios compare the levels of one run. The per-backend decode bench is serving/bench.py.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmops.errors import InputError
from serving import peers
from serving.app import running_server
from serving.bench import NO_GGUF, QUESTIONS
from serving.export import export_model, serving_prompt
from serving.runtime import find_onnx_dir


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
    try:
        find_onnx_dir(model_dir)
        return model_dir
    except InputError:
        if not (model_dir / "config.json").is_file():
            raise InputError("neither an ONNX export (model.onnx, or fp32/model.onnx) nor a Hugging Face "
                             "model folder (config.json)", file=str(model_dir)) from None
    return export_model(model_dir, work / "export", ["fp32"], parity_n=2, max_new_tokens=8).out_dir


def _stream_once(client: Any, url: str, messages: list[dict[str, str]], max_tokens: int, *,
                 chunk_tokens: bool = False) -> tuple[float, int]:
    """One streamed chat request: (seconds to the first content or finish chunk, completion tokens).

    Tokens come from the final usage chunk; with `chunk_tokens`, from the number of content chunks
    (llama-cpp-python's server streams one token a chunk and sends no usage)."""
    import json

    body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    if not chunk_tokens:
        body["stream_options"] = {"include_usage": True}
    start = time.perf_counter()
    first, tokens, chunks, finished = None, None, 0, False
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
                chunks += bool(choice["delta"].get("content"))
                finished = finished or bool(choice["finish_reason"])
                if first is None and (choice["delta"].get("content") or choice["finish_reason"]):
                    first = time.perf_counter() - start
    if chunk_tokens and finished:
        tokens = chunks
    if first is None or tokens is None:
        raise RuntimeError("the stream ended without a finish chunk" + ("" if chunk_tokens else " and usage"))
    return first, tokens


def _user_only(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def _run_level(url: str, streams: int, requests_per_stream: int, max_tokens: int, *,
               messages: Callable[[str], list[dict[str, str]]] = _user_only, chunk_tokens: bool = False) -> LevelResult:
    """`streams` clients at once, each sending `requests_per_stream` streamed requests one after another;
    `messages` makes a request's messages from its question."""
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
                    first, n = _stream_once(http, url, messages(QUESTIONS[(k + r) % len(QUESTIONS)]), max_tokens,
                                            chunk_tokens=chunk_tokens)
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


def _warm_levels(url: str, streams: int, requests_per_stream: int, max_tokens: int,
                 **request: Any) -> list[LevelResult]:
    """One warm-up request (session, allocator, the first prefill), then the 1-stream and the
    `streams`-stream levels; `request`: _run_level's messages and chunk_tokens."""
    _run_level(url, 1, 1, max_tokens, **request)
    return [_run_level(url, n, requests_per_stream, max_tokens, **request) for n in (1, streams)]


def llama_server_missing(gguf: str | Path | None) -> str | None:
    """Why the llama.cpp server peer cannot run (no GGUF, or llama-cpp-python's server not installed); None if it can."""
    return (None if gguf else NO_GGUF) or peers.missing("llama_cpp.server.app", peers.LLAMA_SERVER_INSTALL)


def _llama_server_levels(gguf: Path, prompt: Any, streams: int, requests_per_stream: int, max_tokens: int,
                         threads: int) -> list[LevelResult]:
    """llama-cpp-python's OpenAI-compatible server on `gguf`, driven like `llmops serve`: the same
    questions, streams and token budget. It renders no prompt of its own, so each request carries the
    served prompt's messages (system turn included), through the GGUF's chat template. It serves one
    request at a time (`--interrupt_requests False`: a new request waits instead of cutting the one
    running short) and keeps the previous prompt's KV cache, so the shared system turn is prefilled
    once: its own behaviour, left as a user gets it."""
    from llmops.launch import free_port, running_process

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", "2048",
           "--interrupt_requests", "False"]

    def messages(question: str) -> list[dict[str, str]]:
        return prompt.render_messages(question=question)

    with running_process(cmd, url + "/v1/models", timeout=300, what="llama.cpp's server"):
        return _warm_levels(url, streams, requests_per_stream, max_tokens, messages=messages, chunk_tokens=True)


def bench_batching(model_dir: str | Path, *, streams: int = 16, requests_per_stream: int = 2, max_tokens: int = 32,
                   threads: int | None = None, work_dir: str | Path | None = None,
                   gguf: str | Path | None = None) -> dict[str, Any]:
    """Drive a real `llmops serve` with 1 stream, then `streams` concurrent streams, in one run.

    Every request is a streamed greedy chat request of at most `max_tokens` tokens. Aggregate
    tokens/s = completion tokens of a level / its wall seconds; TTFT = time to the first content
    (or finish) chunk. Returns {"setup", "levels", "ratios", "goals", "peer"}; the ratios compare
    the levels of this run only (absolute numbers vary with the machine's load).

    `gguf`: the same model as a GGUF file. With it and llama-cpp-python's server installed, the
    same levels are run against that server after ours (the peer issue 13 compares with); without,
    "peer" says why and the peer's ratio is absent.
    """
    import httpx

    tmp = tempfile.TemporaryDirectory(prefix="llmops-bench-batching-")
    try:
        served = _served_folder(Path(model_dir), Path(work_dir) if work_dir else Path(tmp.name))
        load_before = os.getloadavg()[0]
        with running_server(served, model_id="bench", threads=threads, timeout=300) as url:
            levels = _warm_levels(url, streams, requests_per_stream, max_tokens)
            metrics = httpx.get(url + "/metrics", timeout=30).text
        # The same server without its prefix cache (serving/batching.py), in the same run: what the cache buys.
        with running_server(served, model_id="bench", threads=threads, timeout=300,
                            env={"LLMOPS_PREFIX_CACHE": "0"}) as url:
            no_prefix = _warm_levels(url, streams, requests_per_stream, max_tokens)
        missing = llama_server_missing(gguf)
        peer: dict[str, Any] = {"name": "llama.cpp server (llama-cpp-python)", "gguf": str(gguf) if gguf else None}
        if missing is None and gguf is not None:
            prompt = serving_prompt(find_onnx_dir(served))
            peer["levels"] = [asdict(level) for level in _llama_server_levels(
                Path(gguf), prompt, streams, requests_per_stream, max_tokens, threads or os.cpu_count() or 1)]
        else:
            peer["missing"] = missing
    finally:
        tmp.cleanup()
    one, many = levels
    max_batch = _metric(metrics, "llmops_batch_rows_max")

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    ratios = {f"tokens/s at {streams} streams / 1 stream": ratio(many.tokens_per_s, one.tokens_per_s),
              f"TTFT p95 at {streams} streams / 1 stream": ratio(many.ttft_p95_ms, one.ttft_p95_ms),
              f"tokens/s at {streams} streams / without the prefix cache":
                  ratio(many.tokens_per_s, no_prefix[1].tokens_per_s),
              f"TTFT p95 at {streams} streams / without the prefix cache":
                  ratio(many.ttft_p95_ms, no_prefix[1].ttft_p95_ms)}
    goals = {f"tokens/s at {streams} streams / 1 stream": ">= 4", f"TTFT p95 at {streams} streams / 1 stream": "<= 2"}
    if "levels" in peer:
        key = f"tokens/s at {streams} streams / llama.cpp server at {streams} streams"
        ratios[key] = ratio(many.tokens_per_s, peer["levels"][1]["tokens_per_s"])
        goals[key] = ">= 2"
    setup = {"model": str(model_dir), "served": str(served), "streams": streams,
             "requests_per_stream": requests_per_stream, "max_tokens": max_tokens, "threads": threads,
             "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
             "largest_batch_seen": int(max_batch),
             "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    prefix = {"hits": _metric(metrics, "llmops_prefix_cache_hits_total"),
              "tokens_saved": _metric(metrics, "llmops_prefix_cache_tokens_saved_total")}
    return {"setup": setup, "levels": [asdict(level) for level in levels], "ratios": ratios, "goals": goals,
            "peer": peer, "prefix_cache": prefix, "without_prefix_cache": [asdict(level) for level in no_prefix]}


def _metric(text: str, name: str) -> float:
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), 0.0)


def batching_table(bench: dict[str, Any]) -> str:
    s = bench["setup"]
    lines = [f"Model {s['model']}, greedy chat streams of at most {s['max_tokens']} tokens, {s['requests_per_stream']} "
             f"requests per stream, largest decode batch seen {s['largest_batch_seen']}, {s['cores']} cores "
             f"({s['cpu']}); 1-min load average before/after: {s['load_avg_1min'][0]}/{s['load_avg_1min'][1]}.", "",
             "| server | streams | requests | errors | tokens | seconds | tokens/s | TTFT p50 ms | TTFT p95 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    peer = bench.get("peer") or {}
    rows = ([("llmops serve", lv) for lv in bench["levels"]]
            + [("llmops serve, LLMOPS_PREFIX_CACHE=0", lv) for lv in bench.get("without_prefix_cache", [])]
            + [(peer["name"], lv) for lv in peer.get("levels", [])])
    for server, lv in rows:
        lines.append(f"| {server} | {lv['streams']} | {lv['requests']} | {lv['errors']} | {lv['tokens']} | "
                     f"{lv['seconds']:.2f} | {lv['tokens_per_s']:.1f} | {lv['ttft_p50_ms']:.0f} | {lv['ttft_p95_ms']:.0f} |")
    if peer.get("missing"):
        lines += ["", f"{peer['name']}: not run ({peer['missing']})."]
    if bench.get("prefix_cache"):
        lines += ["", f"Prefix cache of `llmops serve`: {bench['prefix_cache']['hits']:.0f} rows prefilled after a cached "
                      f"prefix, {bench['prefix_cache']['tokens_saved']:.0f} prompt tokens not prefilled again."]
    lines += ["", "| ratio | value | goal |", "|---|---|---|"]
    lines += [f"| {k} | {v:.2f}x | {bench['goals'].get(k, '')} |" for k, v in bench["ratios"].items()]
    return "\n".join(lines)
