"""A tiny OpenAI-compatible judge for tests: it answers every request with JSON valid against the
schema the request's `response_format` carries.

    .venv/bin/pytest tests/evals/test_judge.py

It stands in for a real judge model (a larger local model on the GPU runner). `verdict` decides
how it judges: "good" picks the most favourable value of every field (the first enum value, which
is "yes" in deepeval's verdict schemas, and the maximum of a bounded number), "bad" the least
favourable ("no", the minimum), and "flip" alternates good/bad per metric run (for majority-vote
tests, one run being a whole metric's calls: GEval's evaluation-steps call is stateless, so the
switch happens on the final-score request).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI


def instance(schema: dict[str, Any], defs: dict[str, Any], good: bool) -> Any:
    """A value valid against `schema` (the subset pydantic emits: objects, arrays, enums, $ref, anyOf)."""
    if "$ref" in schema:
        return instance(defs[schema["$ref"].rsplit("/", 1)[1]], defs, good)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"] or schema["anyOf"]
        return instance(options[0], defs, good)
    if "enum" in schema:
        values = schema["enum"]
        return values[0] if good or len(values) == 1 else values[1]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: instance(sub, defs, good) for name, sub in props.items()}
    if kind == "array":
        return [instance(schema.get("items", {"type": "string"}), defs, good)]
    if kind in ("integer", "number"):
        high = schema.get("maximum", 10)
        low = schema.get("minimum", 0)
        return high if good else low
    if kind == "boolean":
        return good
    return "A judged statement." if good else "no"


def make_judge_app(verdict: str = "good", model_id: str = "stub-judge", version: str = "2026-11-01") -> FastAPI:
    app = FastAPI()
    app.state.requests = []
    state = {"good": verdict != "bad", "runs": 0}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "version": version}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any]) -> dict[str, Any]:
        app.state.requests.append(body)
        fmt = body.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema")
        good = state["good"]
        if schema is None:
            content = "ok"
        else:
            content = json.dumps(instance(schema, schema.get("$defs", {}), good))
            if verdict == "flip" and "score" in schema.get("properties", {}):
                state["good"] = not state["good"]  # the next metric run judges the other way
        return {"object": "chat.completion", "model": model_id,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}

    return app
