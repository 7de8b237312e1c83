"""Continuous batching: one background thread owns a Generator and decodes every request in flight
in one batch, so concurrent HTTP requests share each model call instead of queueing behind the
generator's lock (one request at a time gave each of 16 users under 2 tokens/s).

    from serving.batching import Scheduler
    scheduler = Scheduler(load_generator("exports/v1"), max_batch=16, max_waiting=64)
    (done,) = scheduler.generate_ids([ids], SamplingParams(max_new_tokens=32))  # blocking, any thread
    for chunk in scheduler.stream_ids(ids, params): ...                         # close() cancels

A step (`Scheduler.step`; the thread runs steps while there is work):
1. rows of cancelled requests leave the batch;
2. waiting sequences are admitted up to `max_batch` rows, prefilled together as one left-padded
   batch, given their first token, and their KV cache is merged into the running batch: the shorter
   past is left-padded with zeros, which the attention mask masks out. With the prefix cache,
   sequences that start with a cached prefix are prefilled as a group of their own: the
   prefix's KV, repeated per row, is the past, and only their suffixes run through the model;
3. one decode step of every row: each row feeds its own last token at its own position (positions
   count real tokens only) and is sampled with its own SamplingParams (penalties, temperature and
   top_p with its own seeded rng, stop strings, eos, its budget); finished rows leave the batch and
   leading past columns that are padding in every remaining row are trimmed.

Row state, stop strings and the stream's hold-back of partial characters and stop
prefixes are the Generator's own (`_advance`, `_completion`, `_stream_safe`), token choice is serving/sampling.py's, and a
request's rows are seeded and budgeted as `Generator.generate_ids` does for that request alone.
So a request decodes to the same tokens as it would alone, up to float rounding: a padded or
bigger batch may sum in another order, which can flip a greedy pick only on an exact near-tie
(tests/serving/test_batching.py checks equality on models whose every step matters).

The prefix cache (serving/prefix_cache.py) keeps the KV of prompt starts that requests share. A
suffix shorter than the group's longest leaves a masked hole between prefix and suffix, which no
position counts (positions count real tokens), and trimming removes only columns that are padding in
every row. The prefix's KV is computed by a prefill of the prefix alone, so it equals a whole prompt's
prefill up to float rounding, like the batch shapes above.

Limits: at most `max_batch` rows decode at once; at most `max_waiting` sequences wait for a row.
A request that would go over `max_waiting` gets ServerBusy at once (the app answers 503
`server_busy` with Retry-After), never a wait without end; an empty queue always takes a request,
so a large multi-prompt request is never refused forever. Consumers are sync (`Ticket.result`,
`Ticket.chunks`, from threads) or async (`Ticket.aresult`, `Ticket.achunks`, on the event loop
without a threadpool thread per waiting request). Model calls hold `Generator.lock`, so direct
`Generator.generate` calls (warm-up, predict) still run one at a time beside the scheduler.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmops.errors import InputError
from serving.prefix_cache import PrefixCache
from serving.runtime import Completion, Generator, StreamChunk, _Row
from serving.sampling import SamplingParams, adjust, choose

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_WAITING = 64


class ServerBusy(RuntimeError):
    """The waiting queue is full: the request was not taken (serving/app.py answers 503 server_busy)."""


class RequestCancelled(RuntimeError):
    """Raised to a consumer of a ticket that was cancelled (the client left)."""


@dataclass
class SchedulerStats:
    """Counters since the scheduler was made (Prometheus reads them, tests assert on them)."""

    steps: int = 0
    """Decode steps run."""
    decoded_rows: int = 0
    """Rows summed over decode steps: decoded_rows / steps is the mean batch size."""
    max_batch: int = 0
    """Most rows in one decode step: > 1 means requests really were batched together."""
    prefills: int = 0
    """Prefill calls (several arrivals at one step boundary share one)."""
    prefilled_rows: int = 0
    prefix_hits: int = 0
    """Rows prefilled after a cached prompt prefix (only their suffix ran through the model)."""
    prefix_tokens_saved: int = 0
    """Prompt tokens those rows did not prefill again."""
    joined: int = 0
    """Rows merged into a batch that was already decoding (joined mid-decode)."""
    completed: int = 0
    """Requests whose every row finished."""
    cancelled: int = 0
    """Requests cancelled before they finished (the client disconnected)."""
    rejected: int = 0
    """Requests refused because the waiting queue was full."""


class Ticket:
    """One submitted request (one or more prompts): its events and its cancellation.

    The scheduler thread pushes events (StreamChunk per step when streaming, else the completions
    once; an exception on failure); the consumer pops them from a thread or from the event loop.
    """

    def __init__(self, n_rows: int, stream: bool) -> None:
        self.stream = stream
        self.results: list[Completion | None] = [None] * n_rows
        self.cancelled = False
        self.done = False
        self.counted = False  # the scheduler has counted its cancellation
        self._cond = threading.Condition()
        self._events: collections.deque[Any] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._outcome: Any = None  # what result() got: the completions or the exception, for a second call

    # ---- producer side (the scheduler) ---------------------------------------------------------
    def _push(self, event: Any) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()
            loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: no one is listening
                loop.call_soon_threadsafe(wake.set)

    def _finish_row(self, index: int, completion: Completion) -> bool:
        """Record a finished row; True when it was the request's last."""
        self.results[index] = completion
        if all(r is not None for r in self.results):
            self.done = True
            if not self.stream:
                self._push([r for r in self.results if r is not None])
            return True
        return False

    def _fail(self, exc: BaseException) -> None:
        if not self.done:
            self.done = True
            self._push(exc)

    # ---- consumer side -------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop generating for this request; its rows leave the batch at the next step boundary.
        A no-op once the request has finished."""
        with self._cond:
            if self.done or self.cancelled:
                return
            self.cancelled = True
        self._push(RequestCancelled("the request was cancelled"))

    def _next(self) -> Any:
        with self._cond:
            while not self._events:
                self._cond.wait()
            return self._events.popleft()

    async def _anext(self) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if self._events:
                    return self._events.popleft()
                if self._wake is None:
                    self._loop, self._wake = loop, asyncio.Event()
                self._wake.clear()
                wake = self._wake
            await wake.wait()

    @staticmethod
    def _check(event: Any) -> Any:
        if isinstance(event, BaseException):
            raise event
        return event

    def result(self) -> list[Completion]:
        """Block until every row has finished; the completions in prompt order (again on a second call)."""
        if self.stream:
            raise TypeError("a streaming ticket yields chunks: use chunks()")
        try:
            if self._outcome is None:
                self._outcome = self._next()
            return self._check(self._outcome)
        except BaseException:
            self.cancel()
            raise

    async def aresult(self) -> list[Completion]:
        """`result` on the event loop; cancelling the awaiting task cancels the request."""
        if self.stream:
            raise TypeError("a streaming ticket yields chunks: use achunks()")
        try:
            if self._outcome is None:
                self._outcome = await self._anext()
            return self._check(self._outcome)
        except BaseException:
            self.cancel()
            raise

    def chunks(self) -> Iterator[StreamChunk]:
        """The text deltas of a streaming ticket; the last chunk carries the Completion. Closing the
        iterator early cancels the request."""
        try:
            while True:
                chunk: StreamChunk = self._check(self._next())
                yield chunk
                if chunk.completion is not None:
                    return
        finally:
            self.cancel()

    async def achunks(self) -> AsyncIterator[StreamChunk]:
        """`chunks` on the event loop."""
        try:
            while True:
                chunk: StreamChunk = self._check(await self._anext())
                yield chunk
                if chunk.completion is not None:
                    return
        finally:
            self.cancel()


@dataclass
class _Seq:
    """One row of the batch: a prompt of a ticket and its decoding state."""

    ticket: Ticket
    index: int  # the prompt's index in its ticket
    prompt: list[int]
    params: SamplingParams
    row: _Row
    live_text: bool  # keep row.text current every step (streaming or stop strings need it)
    past: int = 0  # real tokens in the cache; also the position of `pending`
    pending: int = 0  # the last chosen token, not yet fed to the model


class Scheduler:
    """Continuous batching over one Generator (ORT or torch backend), driven by one thread.

    `start=False` makes no thread: the caller drives it with `step()` (deterministic tests).
    """

    def __init__(self, generator: Generator, *, max_batch: int = DEFAULT_MAX_BATCH,
                 max_waiting: int = DEFAULT_MAX_WAITING, start: bool = True, prefix_cache: bool = True) -> None:
        if max_batch < 1:
            raise InputError(f"max_batch must be >= 1, got {max_batch}", field="max_batch")
        if max_waiting < 1:
            raise InputError(f"max_waiting must be >= 1, got {max_waiting}", field="max_waiting")
        self.generator, self.max_batch, self.max_waiting = generator, max_batch, max_waiting
        self.stats = SchedulerStats()
        self._autostart = start
        self._cond = threading.Condition()  # guards _waiting, _paused, _stepping, _closed, _thread
        self._waiting: collections.deque[_Seq] = collections.deque()
        self._paused = 0
        self._stepping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._step_lock = threading.Lock()  # one step at a time (thread or caller)
        # The running batch: its rows, their KV cache and the attention mask over the cache's past.
        self._seqs: list[_Seq] = []
        self._cache: Any = None
        self._mask: np.ndarray | None = None
        self.prefixes = PrefixCache(generator) if prefix_cache else None

    # ---- what callers see ----------------------------------------------------------------------
    @property
    def batch_rows(self) -> int:
        """Rows decoding now."""
        return len(self._seqs)

    @property
    def waiting(self) -> int:
        """Sequences waiting for a row."""
        return len(self._waiting)

    def submit(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *, stream: bool = False) -> Ticket:
        """Queue a request (one row per prompt); raises InputError for a bad prompt and ServerBusy
        when `max_waiting` sequences already wait."""
        gen = self.generator
        prompts = [list(p) for p in prompt_ids]
        if not prompts:
            raise InputError("no prompt to generate for", field="prompt")
        if stream and len(prompts) != 1:
            raise InputError("stream supports a single prompt", field="prompt")
        if min(len(p) for p in prompts) == 0:
            raise InputError("empty prompt: it encodes to no tokens", field="prompt")
        longest = max(len(p) for p in prompts)
        if gen.max_positions is not None and longest >= gen.max_positions:
            raise InputError(f"prompt has {longest} tokens; the model's context window is {gen.max_positions}",
                             field="prompt")
        # The same budget and seeds as Generator.generate_ids gives these prompts as one batch.
        budget = params.max_new_tokens if gen.max_positions is None else min(
            params.max_new_tokens, gen.max_positions - longest)
        ticket = Ticket(len(prompts), stream)
        seqs = [_Seq(ticket, i, p, params, live_text=stream or bool(params.stop),
                     row=_Row(prompt_tokens=len(p), budget=budget,
                              rng=np.random.default_rng(None if params.seed is None else params.seed + i)))
                for i, p in enumerate(prompts)]
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is stopped")
            if self._waiting and len(self._waiting) + len(seqs) > self.max_waiting:
                self.stats.rejected += 1
                raise ServerBusy(f"the server is busy: {len(self._waiting)} sequences are waiting for one of "
                                 f"{self.max_batch} batch rows (max_waiting {self.max_waiting}); retry shortly")
            self._waiting.extend(seqs)
            self._cond.notify_all()
            if self._autostart and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="llmops-batching", daemon=True)
                self._thread.start()
        return ticket

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        """Like Generator.generate_ids, batched with whatever else is in flight (blocks)."""
        return self.submit(prompt_ids, params).result()

    def stream_ids(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[StreamChunk]:
        """Like Generator.stream_ids, batched with whatever else is in flight; close() cancels."""
        return self.submit([prompt_ids], params, stream=True).chunks()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the scheduler at a step boundary (requests still queue): for tests and for a
        maintenance pause without dropping requests."""
        with self._cond:
            self._paused += 1
            while self._stepping:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._paused -= 1
                self._cond.notify_all()

    def stop(self) -> None:
        """Stop the thread and fail every request still waiting or decoding. A later submit starts
        a new thread (an app's lifespan can start and stop more than once)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._step_lock, self._cond:
            error = RuntimeError("the server is shutting down")
            for seq in [*self._waiting, *self._seqs]:
                seq.ticket._fail(error)
            self._waiting.clear()
            self._reset()
            self._thread, self._closed = None, False

    # ---- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._paused or not (self._waiting or self._seqs)):
                    self._cond.wait()
                if self._closed:
                    return
                self._stepping = True
            try:
                self.step()
            except Exception as exc:  # never let the thread die: fail what was in flight, go on
                log.exception("batching step failed")
                self._fail_all(exc)
            finally:
                with self._cond:
                    self._stepping = False
                    self._cond.notify_all()

    def step(self) -> bool:
        """One step: drop cancelled rows, admit and prefill waiting sequences, decode every row.
        Returns whether work remains."""
        with self._step_lock:
            with self._cond:
                for seq in [s for s in self._waiting if s.ticket.cancelled]:
                    self._waiting.remove(seq)
                    self._count_cancelled(seq.ticket)
                admitted: list[_Seq] = []
                while self._waiting and len(self._seqs) + len(admitted) < self.max_batch:
                    admitted.append(self._waiting.popleft())
            cancelled = [s for s in self._seqs if s.ticket.cancelled]
            if cancelled:
                for seq in cancelled:
                    self._count_cancelled(seq.ticket)
                self._keep([i for i, s in enumerate(self._seqs) if not s.ticket.cancelled])
            with self.generator.lock:
                if admitted:
                    try:
                        self._prefill(admitted)
                    except Exception as exc:
                        log.exception("prefill failed")
                        for seq in admitted:
                            seq.ticket._fail(exc)
                if self._seqs:
                    try:
                        self._decode()
                    except Exception as exc:
                        log.exception("decode step failed")
                        self._fail_all(exc)
            return bool(self._seqs or self._waiting)

    # ---- batch operations ----------------------------------------------------------------------
    def _prefill(self, seqs: list[_Seq]) -> None:
        """Prefill newly admitted sequences, choose their first token and merge the survivors into the
        running batch. Sequences that start with the same cached prefix are prefilled together, only their
        suffixes running through the model; the rest as one left-padded batch."""
        groups: dict[tuple[int, ...], list[_Seq]] = {}
        for seq in seqs:
            groups.setdefault(self.prefixes.prefix_for(seq.prompt) if self.prefixes else (), []).append(seq)
        for prefix, group in groups.items():
            try:
                self._prefill_group(group, prefix)
            except Exception as exc:  # only this group's requests fail: another group may already decode
                log.exception("prefill failed")
                for seq in group:
                    seq.ticket._fail(exc)

    def _prefill_group(self, seqs: list[_Seq], prefix: tuple[int, ...]) -> None:
        gen = self.generator
        start = len(prefix)
        longest = max(len(s.prompt) - start for s in seqs)
        input_ids = np.full((len(seqs), longest), gen.pad_id, dtype=np.int64)
        attention = np.zeros((len(seqs), start + longest), dtype=np.int64)
        attention[:, :start] = 1
        for i, seq in enumerate(seqs):
            suffix = seq.prompt[start:]
            input_ids[i, longest - len(suffix):] = suffix
            attention[i, start + longest - len(suffix):] = 1
        # Positions count real tokens only, as Generator._loop; with a prefix, the padding between it and a
        # shorter suffix is a masked hole that no position counts.
        positions = np.clip(np.cumsum(attention, axis=1) - 1, 0, None)[:, start:]
        if prefix:
            assert self.prefixes is not None
            past = self.prefixes.past(prefix, len(seqs))
            logits, cache = gen._decode(past, input_ids, attention, positions)
            self.stats.prefix_hits += len(seqs)
            self.stats.prefix_tokens_saved += start * len(seqs)
        else:
            logits, cache = gen._prefill(input_ids, attention, positions)
        self.stats.prefills += 1
        self.stats.prefilled_rows += len(seqs)
        for seq in seqs:
            seq.past = len(seq.prompt)
        self._choose(seqs, logits)
        keep = [i for i, s in enumerate(seqs) if s.row.finish_reason is None]
        if not keep:
            return
        if len(keep) < len(seqs):
            cache, attention = gen._cache_select(cache, keep), attention[keep]
            seqs = [seqs[i] for i in keep]
            lead = _leading_padding(attention)
            if lead > 0:
                cache, attention = gen._cache_trim(cache, lead), attention[:, lead:]
        if not self._seqs:
            self._seqs, self._cache, self._mask = seqs, cache, attention
            return
        assert self._mask is not None
        past_len = max(self._mask.shape[1], attention.shape[1])
        self._cache = gen._cache_merge(self._cache, cache)
        self._mask = np.concatenate([_pad_mask(self._mask, past_len), _pad_mask(attention, past_len)], axis=0)
        self._seqs = self._seqs + seqs
        self.stats.joined += len(seqs)

    def _decode(self) -> None:
        """One token for every row of the running batch."""
        assert self._mask is not None
        seqs = self._seqs
        next_ids = np.array([[s.pending] for s in seqs], dtype=np.int64)
        positions = np.array([[s.past] for s in seqs], dtype=np.int64)
        mask = np.concatenate([self._mask, np.ones((len(seqs), 1), dtype=np.int64)], axis=1)
        logits, self._cache = self.generator._decode(self._cache, next_ids, mask, positions)
        self._mask = mask
        for seq in seqs:
            seq.past += 1
        self.stats.steps += 1
        self.stats.decoded_rows += len(seqs)
        self.stats.max_batch = max(self.stats.max_batch, len(seqs))
        self._choose(seqs, logits)
        self._keep([i for i, s in enumerate(seqs) if s.row.finish_reason is None])

    def _choose(self, seqs: list[_Seq], logits: np.ndarray) -> None:
        """Each row's next token from its logits row, with its own params; push what it produced."""
        gen = self.generator
        for i, seq in enumerate(seqs):
            row, params = seq.row, seq.params
            scores = logits[i]
            if params.penalised:  # as Generator._penalise, for this row only
                scores = np.array(scores, dtype=np.float32)
                adjust(scores, row.ids, params)
            token = int(np.argmax(scores)) if params.temperature <= 0.0 else choose(scores, params, row.rng)
            seq.pending = token
            gen._advance(row, token, params, seq.live_text)
            self._emit(seq)

    def _emit(self, seq: _Seq) -> None:
        """What Generator.stream_ids yields after this step (streaming), or the completion once done."""
        gen, row, ticket = self.generator, seq.row, seq.ticket
        if ticket.cancelled:
            return
        if row.finish_reason is None:
            if ticket.stream:
                safe = gen._stream_safe(row.text, seq.params.stop)
                if len(safe) > len(row.emitted) and safe.startswith(row.emitted):
                    delta, row.emitted = safe[len(row.emitted):], safe
                    ticket._push(StreamChunk(delta))
            return
        done = gen._completion(row)
        last = ticket._finish_row(seq.index, done)  # a non-streaming ticket pushes its completions here
        if ticket.stream:
            tail = done.text[len(row.emitted):] if done.text.startswith(row.emitted) else ""
            ticket._push(StreamChunk(tail, completion=done))
        if last:
            self.stats.completed += 1

    def _keep(self, keep: list[int]) -> None:
        """Keep only these rows; trim past columns that became padding in every row."""
        if len(keep) == len(self._seqs):
            return
        if not keep:
            self._reset()
            return
        gen = self.generator
        assert self._mask is not None
        self._seqs = [self._seqs[i] for i in keep]
        self._cache, self._mask = gen._cache_select(self._cache, keep), self._mask[keep]
        lead = _leading_padding(self._mask)
        if lead > 0:  # these columns are padding in every row
            self._cache, self._mask = gen._cache_trim(self._cache, lead), self._mask[:, lead:]

    def _reset(self) -> None:
        self._seqs, self._cache, self._mask = [], None, None

    def _count_cancelled(self, ticket: Ticket) -> None:
        if not ticket.counted:
            ticket.counted = True
            self.stats.cancelled += 1

    def _fail_all(self, exc: BaseException) -> None:
        for seq in self._seqs:
            seq.ticket._fail(exc)
        self._reset()


def _leading_padding(mask: np.ndarray) -> int:
    """Columns at the start of the past that are padding in every row."""
    used = mask.any(axis=0)
    return int(np.argmax(used)) if used.any() else mask.shape[1]


def _pad_mask(mask: np.ndarray, past: int) -> np.ndarray:
    missing = past - mask.shape[1]
    if missing <= 0:
        return mask
    return np.concatenate([np.zeros((mask.shape[0], missing), dtype=mask.dtype), mask], axis=1)


class SchedulerCollector:
    """Prometheus families of a Scheduler: gauges of now, counters since start."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        sched, stats = self.scheduler, self.scheduler.stats
        yield GaugeMetricFamily("llmops_batch_rows", "Sequences in the running decode batch", value=sched.batch_rows)
        yield GaugeMetricFamily("llmops_batch_rows_max", "Most sequences decoded in one step since start",
                                value=stats.max_batch)
        yield GaugeMetricFamily("llmops_batch_capacity", "Most sequences one decode step may hold (max_batch)",
                                value=sched.max_batch)
        yield GaugeMetricFamily("llmops_queue_depth", "Sequences waiting for a batch row", value=sched.waiting)
        yield CounterMetricFamily("llmops_decode_steps", "Decode steps run", value=stats.steps)
        yield CounterMetricFamily("llmops_decode_rows", "Rows summed over decode steps (/ steps = mean batch size)",
                                  value=stats.decoded_rows)
        yield CounterMetricFamily("llmops_prefix_cache_hits", "Rows prefilled after a cached prompt prefix",
                                  value=stats.prefix_hits)
        yield CounterMetricFamily("llmops_prefix_cache_tokens_saved", "Prompt tokens not prefilled again",
                                  value=stats.prefix_tokens_saved)
        yield CounterMetricFamily("llmops_requests_rejected_busy", "Requests refused with 503 server_busy",
                                  value=stats.rejected)
        yield CounterMetricFamily("llmops_requests_cancelled", "Requests cancelled in flight (the client left)",
                                  value=stats.cancelled)
