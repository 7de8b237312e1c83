"""A deliberately broken OpenAI-style server for the load-test gate's failure tests.

    .venv/bin/python -m uvicorn tests.loadtests.bad_server:app --host 127.0.0.1 --port 8001

POST /v1/chat/completions answers 500 to non-streaming requests. Streaming requests get, in turn:
a stream without `data: [DONE]`, a chunk that is not JSON, an in-band error event, and a valid
stream. GET /healthz answers 200 so a test can wait for it.
"""

from __future__ import annotations

import itertools
import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

app = FastAPI()
_modes = itertools.cycle(["no_done", "bad_json", "in_band_error", "ok"])


def _chunk(content: str, finish: str | None = None) -> str:
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": content}, "finish_reason": finish}]}) + "\n\n"


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/chat/completions")
async def chat(request: Request):
    body = await request.json()
    if not body.get("stream"):
        return JSONResponse(status_code=500, content={"error": {"message": "boom", "type": "server_error"}})
    mode = next(_modes)

    async def events():
        yield _chunk("hello")
        if mode == "bad_json":
            yield "data: {not json\n\n"
        elif mode == "in_band_error":
            yield "data: " + json.dumps({"error": {"message": "generation failed"}}) + "\n\n"
        yield _chunk(" world", "stop")
        if mode != "no_done":
            yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
