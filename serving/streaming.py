"""Server-sent events of the chat and completion routes (serving/app.py): OpenAI's chunk shapes, one
decode step per event, the generator closed when the client leaves, and on the chat route the
answer's receipt (serving/receipts.py) in the chunk that carries the finish reason.

`state` is the app's ServingState: its generator, its token counters and its receipts.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool

from serving.receipts import RECEIPT_FIELD


class _TrimStream:
    """Streamed equivalent of str.strip(): drop leading whitespace, hold trailing whitespace back."""

    def __init__(self) -> None:
        self.started, self.pending = False, ""

    def feed(self, delta: str) -> str:
        if not self.started:
            delta = delta.lstrip()
            if not delta:
                return ""
            self.started = True
        text = self.pending + delta
        kept = text.rstrip()
        self.pending = text[len(kept):]
        return kept


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _stream_chunks(state: Any, ids: list[int], params: Any) -> AsyncIterator[Any]:
    """Run the generator's stream in the threadpool, one step per hop; close it if the client leaves."""
    iterator = state.generator.stream_ids(ids, params)
    sentinel = object()
    try:
        while True:
            chunk = await run_in_threadpool(next, iterator, sentinel)
            if chunk is sentinel:
                return
            yield chunk
    finally:
        # Runs on disconnect too. The worker thread has finished its step by now (anyio waits for
        # it even when cancelled), so close() only runs the generator's finally: the lock is freed.
        with contextlib.suppress(ValueError):
            iterator.close()


async def chat_sse(state: Any, ids: list[int], params: Any, model: str,
                    include_usage: bool, question: str) -> AsyncIterator[str]:
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
        return _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra})

    yield chunk({"role": "assistant", "content": ""}, None)
    trim = _TrimStream()
    answer = ""
    try:
        async for piece in _stream_chunks(state, ids, params):
            text = trim.feed(piece.text)
            if text:
                answer += text
                yield chunk({"content": text}, None)
            if piece.completion is not None:
                done = piece.completion
                usage = state.count(done.prompt_tokens, done.completion_tokens)
                receipt = state.receipts.issue(cid, model, question, answer) if state.receipts else None
                yield chunk({}, done.finish_reason, **({RECEIPT_FIELD: receipt} if receipt else {}))
                if include_usage:
                    yield _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                "choices": [], "usage": usage.model_dump()})
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        yield _sse({"error": {"message": f"generation failed: {exc}", "type": "server_error",
                              "param": None, "code": None}})
    yield "data: [DONE]\n\n"


async def completion_sse(state: Any, ids: list[int], params: Any, model: str,
                          include_usage: bool) -> AsyncIterator[str]:
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(text: str, finish: str | None) -> str:
        return _sse({"id": cid, "object": "text_completion", "created": created, "model": model,
                     "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]})

    try:
        async for piece in _stream_chunks(state, ids, params):
            if piece.completion is None:
                if piece.text:
                    yield chunk(piece.text, None)
            else:
                done = piece.completion
                usage = state.count(done.prompt_tokens, done.completion_tokens)
                yield chunk(piece.text, done.finish_reason)
                if include_usage:
                    yield _sse({"id": cid, "object": "text_completion", "created": created, "model": model,
                                "choices": [], "usage": usage.model_dump()})
    except Exception as exc:
        yield _sse({"error": {"message": f"generation failed: {exc}", "type": "server_error",
                              "param": None, "code": None}})
    yield "data: [DONE]\n\n"
