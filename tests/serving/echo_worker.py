"""A worst-case worker for guard tests: it echoes the user's message, never refuses, and can stream.

    .venv/bin/pytest tests/serving/test_guards.py tests/evals/test_safety.py

Echoing is the least safe model there is: it repeats injections, HTML and PII back verbatim, so
every attack that the guards do not stop gets through. What the safety suite measures against it
is the guards alone. It validates requests like the real worker does for what matters here
(messages required, roles, content type, max_tokens and temperature caps) so malformed bodies
get a 400. `make_worker(guards=None)` serves it bare; a GuardConfig mounts serving.guards.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=512)
    temperature: float | None = Field(None, ge=0, le=2)
    stream: bool = False


def make_worker(guards: Any = None, registry: Any = None) -> FastAPI:
    from prometheus_client import CollectorRegistry, generate_latest

    app = FastAPI()
    registry = registry or CollectorRegistry()

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"error": {"message": str(exc.errors()[0]["msg"]),
                                                                "type": "invalid_request_error",
                                                                "param": None, "code": "invalid_value"}})

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "echo", "object": "model"}]}

    @app.get("/metrics")
    def metrics() -> Any:
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse(generate_latest(registry))

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> Any:
        text = req.messages[-1].content.strip()
        if not text:
            return JSONResponse(status_code=400, content={"error": {"message": "content is empty",
                                                                    "type": "invalid_request_error",
                                                                    "param": "messages", "code": "invalid_value"}})
        if len(text) > 16_000:
            return JSONResponse(status_code=400, content={"error": {"message": "too long", "type": "invalid_request_error",
                                                                    "param": "messages", "code": "prompt_too_long"}})
        if req.stream:
            def events():
                for i in range(0, len(text), 5):  # 5-character deltas split PII and tags across chunks
                    yield "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
                        {"index": 0, "delta": {"content": text[i:i + 5]}, "finish_reason": None}]}) + "\n\n"
                yield "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
                    {"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return {"object": "chat.completion", "model": req.model or "echo",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}

    if guards is not None:
        from serving.guards import GuardMiddleware

        app.add_middleware(GuardMiddleware, config=guards, registry=registry)
    return app
