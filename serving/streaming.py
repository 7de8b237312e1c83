"""Server-sent events of the chat and completion routes (serving/app.py): OpenAI's chunk shapes, one
decode step per event, the request cancelled when the client leaves, and on the chat route the
answer's receipt (serving/receipts.py) in the chunk that carries the finish reason.

`state` is the app's ServingState: its token counters and its receipts. `ticket` is the request,
already queued on the batching scheduler (serving/batching.py) by the route, so that a full queue
is a 503 before any byte is sent; its chunks arrive on the event loop (no threadpool thread per
stream), with the same deltas as Generator.stream_ids.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

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


@contextlib.asynccontextmanager
async def _pieces(ticket: Any) -> AsyncIterator[AsyncIterator[Any]]:
    """The ticket's chunks. Leaving the block (the body finished, failed, or was closed because the
    client left) cancels the request, so its row leaves the batch at the next step boundary and the
    other rows go on; a no-op once the request has finished."""
    chunks = ticket.achunks()
    try:
        yield chunks
    finally:
        ticket.cancel()
        await chunks.aclose()


async def chat_sse(state: Any, ticket: Any, model: str, include_usage: bool, question: str) -> AsyncIterator[str]:
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
        return _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra})

    trim = _TrimStream()
    answer = ""
    async with _pieces(ticket) as pieces:
        yield chunk({"role": "assistant", "content": ""}, None)
        try:
            async for piece in pieces:
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


async def completion_sse(state: Any, ticket: Any, model: str, include_usage: bool) -> AsyncIterator[str]:
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(text: str, finish: str | None) -> str:
        return _sse({"id": cid, "object": "text_completion", "created": created, "model": model,
                     "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]})

    async with _pieces(ticket) as pieces:
        try:
            async for piece in pieces:
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
