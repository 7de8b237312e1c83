"""Continuous batching (serving/batching.py): rows joining mid-decode and leaving early decode to the
unbatched tokens on both backends; the HTTP server answers concurrent requests as it answers them one
by one; a full queue gets 503 server_busy; a cancelled stream frees its row.

    .venv/bin/pytest tests/serving/test_batching.py -q

The in-process tests drive the scheduler by hand (`start=False`, `step()`), so when a request joins
or leaves the batch is fixed, not a matter of timing.
"""

from __future__ import annotations

import asyncio
import json
import threading
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from llmops.errors import InputError
from serving.batching import RequestCancelled, Scheduler, ServerBusy
from serving.runtime import SamplingParams

PROMPTS = ["def f(x):\n    return", "What is a lambda? é", "import os",
           "A much longer prompt about classes and methods:", "x = [1, 2"]


def run_to_end(scheduler: Scheduler, limit: int = 500) -> None:
    for _ in range(limit):
        if not scheduler.step():
            return
    raise AssertionError("the scheduler did not finish")


def a_stop_string(gen, prompt: str) -> str:
    """A character the model writes after a few tokens of `prompt`, so a stop string really cuts."""
    full = gen.generate([prompt], SamplingParams(max_new_tokens=30, ignore_eos=True))[0]
    return next(ch for ch in full.text[3:] if ch.isalpha())


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_rows_joining_mid_decode_and_leaving_early_decode_as_unbatched(backend, ort_untied, torch_untied):
    gen = ort_untied if backend == "ort" else torch_untied
    ids = [gen.encode(p) for p in PROMPTS]
    assert len({len(i) for i in ids}) == len(ids)  # every prompt length differs: the batch is padded
    requests = [  # (step at which it is submitted, prompts, params)
        (0, [ids[0]], SamplingParams(max_new_tokens=20, ignore_eos=True)),
        (0, [ids[1]], SamplingParams(max_new_tokens=4, ignore_eos=True)),  # leaves early
        (3, [ids[2]], SamplingParams(max_new_tokens=24, ignore_eos=True, frequency_penalty=0.8,
                                     presence_penalty=0.4)),
        (3, [ids[3]], SamplingParams(max_new_tokens=30, stop=(a_stop_string(gen, PROMPTS[3]),))),
        (6, [ids[4], ids[1]], SamplingParams(max_new_tokens=9, ignore_eos=True)),  # two rows, one request
        (8, [ids[0]], SamplingParams(max_new_tokens=12, temperature=0.9, top_p=0.9, seed=5, ignore_eos=True)),
        (8, [ids[3]], SamplingParams(max_new_tokens=1)),  # done at its prefill, never decoded
        (9, [ids[2]], SamplingParams(max_new_tokens=8, ignore_eos=True, first_token_bans=(5, 6, 7))),
    ]
    scheduler = Scheduler(gen, max_batch=16, start=False)
    tickets: list = [None] * len(requests)
    for step in range(10):
        for i, (at, prompts, params) in enumerate(requests):
            if at == step:
                tickets[i] = scheduler.submit(prompts, params)
        scheduler.step()
    run_to_end(scheduler)
    for ticket, (_, prompts, params) in zip(tickets, requests, strict=True):
        got = ticket.result()
        alone = gen.generate_ids(prompts, params)  # the unbatched loop, this request only
        assert [c.token_ids for c in got] == [c.token_ids for c in alone]
        assert [(c.text, c.finish_reason, c.prompt_tokens) for c in got] == \
            [(c.text, c.finish_reason, c.prompt_tokens) for c in alone]
    stop_row = tickets[3].result()[0]
    assert stop_row.finish_reason == "stop" and stop_row.completion_tokens < 30  # the stop string really cut
    stats = scheduler.stats
    assert stats.max_batch >= 5  # rows really decoded together
    assert stats.joined >= 4  # later requests joined a batch that was decoding
    assert stats.prefills == 5  # arrivals at one step boundary (0, 3, 6, 8, 9) share one prefill
    assert stats.completed == len(requests) and scheduler.batch_rows == 0


SYSTEM = ("You answer questions about the Python programming language. If a question is not about Python, "
          "reply that you can only help with questions about Python.\n\nQuestion:\n")


def assert_each_row_caches_what_a_whole_prefill_would(scheduler: Scheduler) -> None:
    """Each row's real past columns (mask 1) hold the keys and values a prefill of everything that row fed
    (its prompt and its tokens but the pending last) computes alone: no column lost, shifted or misplaced."""
    gen = scheduler.generator
    for r, seq in enumerate(scheduler._seqs):
        fed = seq.prompt + seq.row.ids[:-1]  # the last chosen token is pending, not yet fed
        real = np.flatnonzero(scheduler._mask[r])
        assert seq.past == len(fed) == len(real)
        ids = np.asarray([fed], dtype=np.int64)
        _, whole = gen._prefill(ids, np.ones_like(ids), np.arange(len(fed), dtype=np.int64)[None])
        mine, theirs = cache_arrays(scheduler._cache), cache_arrays(whole)
        for name, value in mine.items():
            np.testing.assert_allclose(value[r][:, real, :], theirs[name][0], atol=1e-4, err_msg=name)


def cache_arrays(cache) -> dict[str, np.ndarray]:
    """Either backend's cache as numpy (batch, kv_heads, past, head_dim) arrays by name."""
    if isinstance(cache, dict):  # ORT
        return cache
    return {f"{i}.{part}": getattr(layer, part).detach().float().numpy()  # torch DynamicCache
            for i, layer in enumerate(cache.layers) for part in ("keys", "values")}


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_prompts_that_share_a_start_prefill_only_their_suffix_and_decode_as_unbatched(backend, ort_untied,
                                                                                      torch_untied):
    """A chat turn's prompt starts with the same system turn every time: once two prompts shared a start of
    PREFIX_MIN_TOKENS or more, its KV is cached and later prompts run only their suffix through the model.
    Suffixes of different lengths leave masked holes between the prefix and the suffix; when the row with
    the longest suffix leaves, every remaining row has a hole and only true padding may be trimmed. Every
    request still decodes to its unbatched tokens, and every row's cache is what a whole prefill computes."""
    from serving.prefix_cache import PREFIX_MIN_TOKENS

    gen = ort_untied if backend == "ort" else torch_untied
    asks = ["How do I sort a dict by value?", "What is a lambda?", "Why does my regex not match across newlines?",
            "What does yield do?", "import os, sys"]
    ids = [gen.encode(SYSTEM + a) for a in asks]
    shared = len(gen.encode(SYSTEM)) - 2
    assert shared >= PREFIX_MIN_TOKENS and len({len(i) for i in ids}) >= 4  # suffixes of other lengths: holes
    assert len(ids[2]) > len(ids[1])
    requests = [  # (step at which it is submitted, prompt, params)
        (0, ids[0], SamplingParams(max_new_tokens=2, ignore_eos=True)),  # nothing to share with yet; done at once
        (2, ids[2], SamplingParams(max_new_tokens=3, ignore_eos=True)),  # the start is cached; longest suffix, leaves
        (2, ids[1], SamplingParams(max_new_tokens=16, ignore_eos=True, frequency_penalty=0.5)),
        (4, ids[3], SamplingParams(max_new_tokens=10, temperature=0.8, top_p=0.9, seed=3, ignore_eos=True)),
        (4, ids[4], SamplingParams(max_new_tokens=12, ignore_eos=True)),
    ]
    scheduler = Scheduler(gen, max_batch=16, start=False)
    tickets: list = [None] * len(requests)
    for step in range(40):
        for i, (at, prompt, params) in enumerate(requests):
            if at == step:
                tickets[i] = scheduler.submit([prompt], params)
        scheduler.step()
        assert_each_row_caches_what_a_whole_prefill_would(scheduler)
    assert scheduler.batch_rows == 0
    for ticket, (_, prompt, params) in zip(tickets, requests, strict=True):
        [got], [alone] = ticket.result(), gen.generate_ids([prompt], params)
        assert got.token_ids == alone.token_ids
        assert (got.text, got.finish_reason, got.prompt_tokens) == (alone.text, alone.finish_reason, alone.prompt_tokens)
    stats = scheduler.stats
    assert scheduler.prefixes is not None and scheduler.prefixes.entries == 1  # one shared start, prefilled once
    assert stats.prefix_hits == 4  # every prompt after the first ran only its suffix
    assert stats.prefix_tokens_saved >= 4 * shared
    assert stats.max_batch >= 3 and stats.completed == len(requests)


def test_a_prefill_group_that_fails_fails_only_its_own_requests(ort_untied, monkeypatch):
    """Arrivals of one step are prefilled in groups (by cached prefix); when one group's prefill raises, the
    other group's requests, already merged into the batch, decode to their unbatched tokens."""
    gen = ort_untied
    first, shared = gen.encode(SYSTEM + "What is a tuple?"), gen.encode(SYSTEM + "What is a set?")
    other = gen.encode("def f(x):\n    return")
    params = SamplingParams(max_new_tokens=6, ignore_eos=True)
    scheduler = Scheduler(gen, start=False)
    scheduler.submit([first], SamplingParams(max_new_tokens=1))
    scheduler.step()

    def broken(cache, rows):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(gen, "_cache_repeat", broken)
    failing, fine = scheduler.submit([shared], params), scheduler.submit([other], params)
    run_to_end(scheduler)
    with pytest.raises(RuntimeError, match="out of memory"):
        failing.result()
    assert [c.token_ids for c in fine.result()] == [c.token_ids for c in gen.generate_ids([other], params)]
    assert scheduler.batch_rows == 0


def test_a_scheduler_without_the_prefix_cache_prefills_whole_prompts(ort_untied):
    ids = [ort_untied.encode(SYSTEM + a) for a in ("What is a tuple?", "What is a set?", "What is a list?")]
    scheduler = Scheduler(ort_untied, start=False, prefix_cache=False)
    tickets = [scheduler.submit([i], SamplingParams(max_new_tokens=4, ignore_eos=True)) for i in ids]
    run_to_end(scheduler)
    assert [t.result()[0].token_ids for t in tickets] == \
        [c.token_ids for c in ort_untied.generate_ids(ids, SamplingParams(max_new_tokens=4, ignore_eos=True))]
    assert scheduler.stats.prefix_hits == 0 and scheduler.prefixes is None


def test_streamed_deltas_through_the_scheduler_equal_the_generators(ort_untied):
    gen = ort_untied
    scheduler = Scheduler(gen, start=False)
    cases = [(PROMPTS[0], SamplingParams(max_new_tokens=24, ignore_eos=True)),
             (PROMPTS[1], SamplingParams(max_new_tokens=24, stop=("e",), ignore_eos=True)),
             (PROMPTS[3], SamplingParams(max_new_tokens=24, stop=("ti", "un"), ignore_eos=True))]
    tickets = []
    for prompt, params in cases:
        tickets.append(scheduler.submit([gen.encode(prompt)], params, stream=True))
        scheduler.step()  # each joins the one before it mid-decode
    run_to_end(scheduler)
    for ticket, (prompt, params) in zip(tickets, cases, strict=True):
        batched = [(c.text, c.completion) for c in ticket.chunks()]
        alone = [(c.text, c.completion) for c in gen.stream(prompt, params)]
        assert batched == alone
    assert scheduler.stats.max_batch == 3


def test_bad_input_is_refused_before_it_queues(ort_untied):
    scheduler = Scheduler(ort_untied, start=False)
    with pytest.raises(InputError, match="empty prompt"):
        scheduler.submit([[]], SamplingParams())
    with pytest.raises(InputError, match="context window"):
        scheduler.submit([[5] * ort_untied.max_positions], SamplingParams())
    with pytest.raises(InputError, match="single prompt"):
        scheduler.submit([[5], [6]], SamplingParams(), stream=True)
    with pytest.raises(InputError, match="max_batch"):
        Scheduler(ort_untied, max_batch=0)
    assert scheduler.waiting == 0


def test_a_full_queue_is_refused_and_the_batch_stays_bounded(ort_untied):
    scheduler = Scheduler(ort_untied, max_batch=2, max_waiting=3, start=False)
    ids = ort_untied.encode(PROMPTS[2])
    params = SamplingParams(max_new_tokens=6, ignore_eos=True)
    tickets = [scheduler.submit([ids], params) for _ in range(3)]
    with pytest.raises(ServerBusy, match="busy"):
        scheduler.submit([ids], params)
    assert scheduler.stats.rejected == 1
    scheduler.step()  # two rows admitted (max_batch), one still waits
    assert scheduler.batch_rows == 2 and scheduler.waiting == 1
    tickets.append(scheduler.submit([ids], params))  # room in the queue again
    run_to_end(scheduler)
    alone = ort_untied.generate_ids([ids], params)[0].token_ids
    assert all(t.result()[0].token_ids == alone for t in tickets)
    assert scheduler.stats.max_batch == 2


def test_a_cancelled_stream_frees_its_row_and_the_batch_goes_on(ort_untied):
    """Through serving/streaming.py: closing the SSE body (what a disconnect does) cancels the row."""
    from serving.streaming import completion_sse

    gen = ort_untied
    scheduler = Scheduler(gen, start=False)
    state = SimpleNamespace(count=lambda p, c: SimpleNamespace(model_dump=dict), receipts=None)
    long_params = SamplingParams(max_new_tokens=40, ignore_eos=True)
    other_params = SamplingParams(max_new_tokens=20, ignore_eos=True)
    other_ids = gen.encode(PROMPTS[1])

    async def scenario() -> list[str]:
        streamed = scheduler.submit([gen.encode(PROMPTS[0])], long_params, stream=True)
        body = completion_sse(state, streamed, "micro", False)
        other = scheduler.submit([other_ids], other_params)
        for _ in range(3):
            scheduler.step()
        events = [await body.__anext__()]
        assert scheduler.batch_rows == 2
        await body.aclose()  # the client left
        assert streamed.cancelled
        scheduler.step()
        assert scheduler.batch_rows == 1  # the cancelled row left at the step boundary
        run_to_end(scheduler)
        assert other.result()[0].token_ids == gen.generate_ids([other_ids], other_params)[0].token_ids
        return events

    events = asyncio.run(scenario())
    assert events[0].startswith("data: ") and json.loads(events[0][6:])["choices"][0]["finish_reason"] is None
    assert scheduler.stats.cancelled == 1 and scheduler.stats.completed == 1
    waiting = scheduler.submit([other_ids], other_params)
    waiting.cancel()  # a waiter gets the cancellation, and the row never runs
    with pytest.raises(RequestCancelled):
        waiting.result()
    assert not scheduler.step() and scheduler.stats.cancelled == 2


def test_the_thread_serves_concurrent_callers(torch_untied):
    """The background thread: callers in threads get the unbatched answers, and the thread stops."""
    gen = torch_untied
    scheduler = Scheduler(gen)
    params = [SamplingParams(max_new_tokens=n, ignore_eos=True) for n in (6, 10, 14)]
    ids = [gen.encode(p) for p in PROMPTS[:3]]
    results: dict[int, list[int]] = {}

    def ask(i: int) -> None:
        results[i] = scheduler.generate_ids([ids[i]], params[i])[0].token_ids

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    scheduler.stop()
    assert results == {i: gen.generate_ids([ids[i]], params[i])[0].token_ids for i in range(3)}
    assert scheduler.stats.completed == 3


# ---- the HTTP server ---------------------------------------------------------------------------
def http_requests() -> list[tuple[str, dict]]:
    """Requests of every kind the routes take: chat, raw completions, several prompts, streams,
    stop strings, penalties, different lengths."""
    chat = "/v1/chat/completions"
    asks = [(chat, {"messages": [{"role": "user", "content": q}], "max_tokens": n})
            for q, n in [("What is a lambda?", 24), ("How do I copy a file?", 6), ("Why use tuples?", 40)]]
    asks += [
        (chat, {"messages": [{"role": "system", "content": "Some context."},
                             {"role": "user", "content": "How do I read a file?"}], "max_tokens": 30,
                "frequency_penalty": 1.0, "presence_penalty": 0.5}),
        (chat, {"messages": [{"role": "user", "content": "What is pip?"}], "max_tokens": 32, "stream": True,
                "stream_options": {"include_usage": True}}),
        ("/v1/completions", {"prompt": "def f(x):\n    return", "max_tokens": 20, "stop": ["e", "\n"]}),
        ("/v1/completions", {"prompt": ["import os", "x = [1, 2"], "max_tokens": 12}),
        ("/v1/completions", {"prompt": "class A:", "max_tokens": 28, "stream": True}),
    ]
    return asks


def answer(url: str, route: str, body: dict) -> list:
    """What a client reads, without ids and timestamps: per choice (text, finish_reason), and usage."""
    if not body.get("stream"):
        resp = httpx.post(url + route, json=body, timeout=300)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        texts = [(c["message"]["content"] if "message" in c else c["text"], c["finish_reason"])
                 for c in data["choices"]]
        return [texts, data["usage"]]
    text, finish, usage = "", None, None
    with httpx.stream("POST", url + route, json=body, timeout=300) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                assert "error" not in event, event
                usage = event.get("usage") or usage
                for c in event["choices"]:
                    text += c.get("text") or (c.get("delta") or {}).get("content") or ""
                    finish = c["finish_reason"] or finish
    return [[(text, finish)], usage]


def scrape(url: str, name: str) -> float:
    lines = [line for line in httpx.get(url + "/metrics", timeout=30).text.splitlines() if line.startswith(name + " ")]
    return float(lines[0].split()[-1])


@pytest.fixture(scope="module")
def batching_server(untied_export):
    """A real worker on the random-weight export: every token differs, so any mix-up shows."""
    from serving.app import running_server

    with running_server(untied_export, model_id="untied", threads=1) as url:
        yield url


def test_concurrent_http_requests_answer_byte_for_byte_as_sequential_ones(batching_server):
    from concurrent.futures import ThreadPoolExecutor

    asks = http_requests()
    sequential = [answer(batching_server, route, body) for route, body in asks]
    assert len({json.dumps(a[0]) for a in sequential}) == len(asks)  # varied answers: a mix-up would show
    assert scrape(batching_server, "llmops_batch_rows_max") <= 2  # one request at a time (2 prompts in one)
    for _attempt in range(3):  # the requests overlap unless the machine stalls a whole burst
        barrier = threading.Barrier(len(asks))

        def ask(i: int, barrier: threading.Barrier = barrier) -> list:
            barrier.wait()
            return answer(batching_server, *asks[i])

        with ThreadPoolExecutor(len(asks)) as pool:
            concurrent = list(pool.map(ask, range(len(asks))))
        assert concurrent == sequential
        if scrape(batching_server, "llmops_batch_rows_max") > 2:
            break
    assert scrape(batching_server, "llmops_batch_rows_max") > 2  # rows of different requests decoded together
    assert scrape(batching_server, "llmops_batch_rows") == 0 and scrape(batching_server, "llmops_queue_depth") == 0


def test_a_full_queue_gets_503_server_busy(exported):
    import time
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from serving.app import ServeLimits, create_app

    app = create_app(exported.out_dir, limits=ServeLimits(max_batch=1, max_waiting=1, rate_limit=None),
                     model_id="micro", auth="off")
    body = {"prompt": "def f(x):", "max_tokens": 4}
    with TestClient(app) as client:
        scheduler = app.state.serving.scheduler
        with ThreadPoolExecutor(1) as pool, scheduler.paused():
            queued = pool.submit(client.post, "/v1/completions", json=body)
            deadline = time.monotonic() + 120
            while scheduler.waiting < 1 and time.monotonic() < deadline:  # a wait, not an assertion on time
                time.sleep(0.05)
            busy = client.post("/v1/completions", json=body)
            busy_stream = client.post("/v1/chat/completions", json={"messages": USER_ASK, "stream": True})
        assert queued.result().status_code == 200  # the queued request is served once the scheduler goes on
        assert client.post("/v1/completions", json=body).status_code == 200
        metrics = client.get("/metrics").text
        schema = client.get("/openapi.json").json()
    for resp in (busy, busy_stream):  # a stream is refused before its first byte, with a status
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "server_busy" and resp.json()["error"]["type"] == "server_error"
        assert "busy" in resp.json()["error"]["message"] and resp.headers["Retry-After"] == "1"
    assert "llmops_requests_rejected_busy_total 2.0" in metrics
    for route in ("/v1/chat/completions", "/v1/completions"):
        assert "503" in schema["paths"][route]["post"]["responses"]


USER_ASK = [{"role": "user", "content": "What is a lambda?"}]


def test_bench_batching_prints_ratios_of_one_run(untied_export, tmp_path):
    from llmops.cli import main
    from serving.bench_batching import batching_table, bench_batching

    result = bench_batching(untied_export, streams=3, requests_per_stream=1, max_tokens=4, threads=1,
                            work_dir=tmp_path)
    assert [lv["streams"] for lv in result["levels"]] == [1, 3]
    assert [lv["requests"] for lv in result["levels"]] == [1, 3]
    assert all(lv["errors"] == 0 and lv["tokens"] > 0 and lv["ttft_p95_ms"] > 0 for lv in result["levels"])
    assert set(result["goals"]) == {"tokens/s at 3 streams / 1 stream", "TTFT p95 at 3 streams / 1 stream"}
    assert set(result["ratios"]) == set(result["goals"]) | {"tokens/s at 3 streams / without the prefix cache",
                                                            "TTFT p95 at 3 streams / without the prefix cache"}
    # The chat requests share the served prompt's system turn: the server's scheduler cached it. The same
    # levels ran on a server without the cache, in the same run.
    assert result["prefix_cache"]["hits"] > 0 and result["prefix_cache"]["tokens_saved"] > 0
    assert [lv["streams"] for lv in result["without_prefix_cache"]] == [1, 3]
    assert all(lv["errors"] == 0 and lv["tokens"] > 0 for lv in result["without_prefix_cache"])
    # No GGUF (a micro model has none): the llama.cpp server peer is not run, and the result says why.
    assert result["peer"]["missing"].startswith("no GGUF") and "levels" not in result["peer"]
    table = batching_table(result)
    assert "| server | streams | requests |" in table and "TTFT p95 at 3 streams / 1 stream" in table
    assert "| llmops serve | 3 | 3 | 0 |" in table and "llama.cpp server (llama-cpp-python): not run (no GGUF" in table
    assert "| llmops serve, LLMOPS_PREFIX_CACHE=0 | 3 | 3 | 0 |" in table and "Prefix cache of `llmops serve`" in table
    assert main(["bench", "batching", "--model", str(tmp_path), "--out", str(tmp_path / "b.json")]) == 2


def test_the_llama_cpp_server_peer_says_why_it_did_not_run(tmp_path, monkeypatch):
    import sys

    from serving.bench import NO_GGUF
    from serving.bench_batching import llama_server_missing

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert llama_server_missing(None) == NO_GGUF
    monkeypatch.setitem(sys.modules, "llama_cpp.server.app", None)  # as where the `llamacpp` extra is not installed
    assert llama_server_missing(gguf) == (
        "not installed: pip install 'llama-cpp-python[server]==0.3.36' (compiles ~20 min)")
