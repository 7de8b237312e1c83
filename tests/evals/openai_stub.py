"""A tiny OpenAI-compatible server with fixed answers, served by uvicorn on loopback for the eval tests.

    .venv/bin/pytest tests/evals/test_rule_evals.py

It stands in for "any OpenAI-compatible endpoint" (ours, vLLM, TGI): the runner and client talk
to it over real HTTP. Answers are looked up by the question in the rendered prompt, so each test
knows exactly which case must pass and which must fail. Trigger words in the prompt make it
misbehave on purpose: FAIL400 / FAIL500 answer with that status, FLAKY answers 503 on the first
request of each prompt and 200 afterwards.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse

from llmops.launch import running_app

REFUSAL = "I can only help with questions about Python."
ANSWERS = {
    "What is a lambda?": "A lambda is a small anonymous function written with the lambda keyword.",
    "What is the capital of France?": REFUSAL,
    "How do I delete a file?": "Use shutil to manage files.",  # wrong on purpose: no os.remove
    "Which function copies a file?": "The shutil module has a copyfile() function.",
    "Show me some HTML.": '<b onclick="steal()">mail jane.doe@example.com</b>',
    "Who maintains this?": "Write to jane.doe@example.com for help.",
}
JSON_ANSWERS = {
    "What is a lambda?": json.dumps({"answer": "An anonymous function.", "confidence": 0.9}),
    "How do I delete a file?": "Sure! {\"answer\": \"os.remove\"}",  # not JSON on purpose
}
# The plain format (no chat template): the user message, whose last line is "Question: ..." with a
# context, or the question itself without one.
_QUESTION = re.compile(r"### (?:User|Question):\n(?:.*Question: )?(.*?)\n### Answer:", re.S)


def answer_for(prompt: str) -> str:
    match = _QUESTION.search(prompt)
    question = match.group(1).strip() if match else prompt.strip()
    table = JSON_ANSWERS if "JSON object" in prompt else ANSWERS
    return table.get(question, "I do not know.")


def make_app(api_key: str | None = None) -> FastAPI:
    app = FastAPI()
    seen: Counter[str] = Counter()
    app.state.requests = []

    def check_key(authorization: str | None) -> None:
        if api_key is not None and authorization != f"Bearer {api_key}":
            raise HTTPException(status_code=401, detail="bad or missing API key")

    def misbehave(text: str) -> JSONResponse | None:
        if "FAIL400" in text:
            return JSONResponse({"error": {"message": "prompt rejected"}}, status_code=400)
        if "FAIL500" in text:
            return JSONResponse({"error": {"message": "model crashed"}}, status_code=500)
        if "FLAKY" in text:
            seen[text] += 1
            if seen[text] == 1:
                return JSONResponse({"error": {"message": "warming up"}}, status_code=503)
        return None

    @app.get("/v1/models")
    def models(authorization: str | None = Header(None)) -> dict[str, Any]:
        check_key(authorization)
        return {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}

    @app.post("/v1/completions")
    def completions(body: dict[str, Any], authorization: str | None = Header(None)) -> Any:
        check_key(authorization)
        app.state.requests.append(body)
        if (bad := misbehave(body["prompt"])) is not None:
            return bad
        text = answer_for(body["prompt"])
        return {"object": "text_completion", "model": body.get("model"),
                "choices": [{"index": 0, "text": " " + text, "finish_reason": "stop"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any], authorization: str | None = Header(None)) -> Any:
        check_key(authorization)
        app.state.requests.append(body)
        last = body["messages"][-1]["content"]
        if (bad := misbehave(last)) is not None:
            return bad
        return {"object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": answer_for(last)}}]}

    return app


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free loopback port; yield its base URL."""
    with running_app(app, lifespan="off", timeout=10, what="the stub server") as url:
        yield url
