"""The OpenAI-compatible API: the official client over a real uvicorn subprocess, 4xx for every bad
request class, Prometheus metrics.

    .venv/bin/pytest tests/serving/test_app.py -q
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from llmops.errors import InputError
from serving.app import ServeLimits, create_app, running_server

# The answer prompt with its canary renders to about 200 micro-model tokens before the question.
LIMITS = ServeLimits(max_prompt_chars=2000, max_prompt_tokens=300, max_tokens_cap=64, max_body_bytes=20_000)
USER = [{"role": "user", "content": "What is a lambda?"}]


@pytest.fixture(scope="module")
def client(exported):
    from fastapi.testclient import TestClient

    app = create_app(exported.out_dir, limits=LIMITS, model_id="micro", auth="off")
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def server(exported):
    with running_server(exported.out_dir, model_id="micro", threads=1) as url:
        yield url


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))).strip(",") == want:
            return float(m.group(2))
    return 0.0


def test_openai_client_against_real_server(server):
    import openai

    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    models = client.models.list()
    assert [m.id for m in models.data] == ["micro"]

    chat = client.chat.completions.create(
        model="micro", max_tokens=12,
        messages=[{"role": "system", "content": "A lambda is an anonymous function."}, *USER])
    choice = chat.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert chat.usage.prompt_tokens > 20 and 0 < chat.usage.completion_tokens <= 12
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

    plain = client.chat.completions.create(model="micro", max_tokens=12, messages=USER)
    stream = client.chat.completions.create(model="micro", max_tokens=12, messages=USER, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

    comp = client.completions.create(model="micro", prompt="def f(x):", max_tokens=5)
    assert comp.choices[0].finish_reason == "length" and comp.usage.completion_tokens == 5
    assert comp.usage.prompt_tokens > 0
    batch = client.completions.create(model="micro", prompt=["def f(x):", "import os"], max_tokens=3)
    assert [c.index for c in batch.choices] == [0, 1]

    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="micro", messages=[{"role": "user", "content": ""}])
    assert err.value.status_code == 400 and "empty" in err.value.message


def test_server_health_and_metrics(server):
    assert httpx.get(server + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server + "/readyz").json()
    assert ready["status"] == "ready" and ready["backend"] == "onnx"
    before = httpx.get(server + "/metrics").text
    for _ in range(2):
        httpx.post(server + "/v1/chat/completions", json={"messages": USER, "max_tokens": 3}).raise_for_status()
    assert httpx.post(server + "/v1/chat/completions", json={"messages": []}).status_code == 400
    after = httpx.get(server + "/metrics").text
    ok = dict(name="llmops_http_requests_total", route="/v1/chat/completions")
    assert metric(after, **ok, status="200") - metric(before, **ok, status="200") == 2
    assert metric(after, **ok, status="400") - metric(before, **ok, status="400") == 1
    assert metric(after, "llmops_generated_tokens_total") - metric(before, "llmops_generated_tokens_total") == 6
    assert metric(after, "llmops_http_request_duration_seconds_count", route="/v1/chat/completions") >= 3
    assert "llmops_http_requests_in_flight" in after


def long_text(n_tokens: int) -> str:
    return " the" * n_tokens  # one token per " the" in the micro tokenizer


BAD_REQUESTS = [
    # (id, route, body (dict or raw str), status, param, code)
    ("bad-json", "/v1/chat/completions", '{"messages": [', 400, None, "invalid_json"),
    ("not-an-object", "/v1/chat/completions", "[1, 2]", 400, None, "invalid_value"),
    ("missing-messages", "/v1/chat/completions", {"model": "x"}, 400, "messages", "missing_field"),
    ("empty-messages", "/v1/chat/completions", {"messages": []}, 400, "messages", "invalid_value"),
    ("messages-not-list", "/v1/chat/completions", {"messages": "hi"}, 400, "messages", "invalid_value"),
    ("unknown-role", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 400,
     "messages.0.role", "invalid_value"),
    ("content-wrong-type", "/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400,
     "messages.0.content", "invalid_value"),
    ("max-tokens-string", "/v1/chat/completions", {"messages": USER, "max_tokens": "5"}, 400, "max_tokens",
     "invalid_value"),
    ("max-tokens-zero", "/v1/chat/completions", {"messages": USER, "max_tokens": 0}, 400, "max_tokens",
     "invalid_value"),
    ("stream-not-bool", "/v1/chat/completions", {"messages": USER, "stream": "yes"}, 400, "stream",
     "invalid_value"),
    ("temperature-range", "/v1/chat/completions", {"messages": USER, "temperature": 3}, 400, "temperature",
     "invalid_value"),
    ("frequency-penalty-range", "/v1/completions", {"prompt": "x", "frequency_penalty": -2.5}, 400,
     "frequency_penalty", "invalid_value"),
    ("n-above-one", "/v1/chat/completions", {"messages": USER, "n": 2}, 400, "n", "invalid_value"),
    ("no-user-message", "/v1/chat/completions", {"messages": [{"role": "system", "content": "ctx"}]}, 400,
     "messages", "invalid_value"),
    ("empty-user-content", "/v1/chat/completions", {"messages": [{"role": "user", "content": "  "}]}, 400,
     "messages.0.content", "invalid_value"),
    ("too-many-chars", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 2001}]}, 400,
     "messages", "prompt_too_long"),
    ("too-many-tokens", "/v1/chat/completions", {"messages": [{"role": "user", "content": long_text(301)}]}, 400,
     "messages", "context_length_exceeded"),
    ("max-tokens-above-cap", "/v1/chat/completions", {"messages": USER, "max_tokens": 65}, 400, "max_tokens",
     "invalid_value"),
    ("empty-prompt", "/v1/completions", {"prompt": ""}, 400, "prompt", "invalid_value"),
    ("empty-prompt-in-list", "/v1/completions", {"prompt": ["ok", " "]}, 400, "prompt.1", "invalid_value"),
    ("prompt-wrong-type", "/v1/completions", {"prompt": 42}, 400, "prompt", "invalid_value"),
    ("prompt-plus-max-tokens-over-window", "/v1/completions", {"prompt": long_text(299), "max_tokens": 60}, 400,
     "max_tokens", "context_length_exceeded"),
    ("stream-with-many-prompts", "/v1/completions", {"prompt": ["a", "b"], "stream": True}, 400, "prompt",
     "invalid_value"),
    ("body-too-large", "/v1/completions", {"prompt": "x" * 30_000}, 413, None, "request_too_large"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_invalid_requests_get_openai_shaped_4xx(client, case):
    _, route, body, status, param, code = case
    content = body if isinstance(body, str) else json.dumps(body)
    resp = client.post(route, content=content, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param and error["code"] == code


def test_unknown_route_and_method(client):
    resp = client.get("/v1/nothing")
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"
    assert client.get("/v1/chat/completions").status_code == 405


def test_in_process_chat_uses_the_prompt_template(client, exported):
    """The chat prompt is the served prompt rendered with question + system context."""
    from llmops.prompts import load_prompt_file

    prompt = load_prompt_file(exported.variants["fp32"] / "prompt.yaml")
    gen = client.app.state.serving.generator
    body = {"messages": [{"role": "system", "content": "Some context."}, *USER], "max_tokens": 4,
            "temperature": 0, "top_p": 1}  # JSON integers are valid floats
    usage = client.post("/v1/chat/completions", json=body).json()["usage"]
    expected = prompt.render(question=USER[0]["content"], context="Some context.")
    assert usage["prompt_tokens"] == gen.count_tokens(expected)


def test_the_prompts_penalties_are_the_default_and_a_request_overrides_them(client):
    state = client.app.state.serving
    served = state.prompt
    state.prompt = served.model_copy(update={"params": served.params.model_copy(update={"frequency_penalty": 1.5})})
    try:
        def text(**extra):
            body = {"prompt": "import os", "max_tokens": 24, "stop": [], **extra}
            return client.post("/v1/completions", json=body).json()["choices"][0]["text"]

        default, penalised, plain = text(), text(frequency_penalty=1.5), text(frequency_penalty=0)
    finally:
        state.prompt = served
    assert default == penalised != plain


def test_running_server_reports_a_bad_model(tmp_path):
    from llmops.errors import InputError

    with pytest.raises(InputError, match="exit 2"), running_server(tmp_path, timeout=60):
        pass


def test_concurrent_requests_all_answer_the_same(server):
    """Concurrent greedy requests are batched together (serving/batching.py) and all answer alike."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"messages": USER, "max_tokens": 8}

    def ask(_: int) -> tuple[int, str]:
        resp = httpx.post(server + "/v1/chat/completions", json=body, timeout=60)
        return resp.status_code, resp.json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
        assert httpx.get(server + "/healthz", timeout=10).status_code == 200
    assert set(answers) == {answers[0]} and answers[0][0] == 200


def test_torch_backend_serves_the_same_answer(client, micro_model):
    from fastapi.testclient import TestClient

    body = {"messages": USER, "max_tokens": 8}
    with TestClient(create_app(micro_model, backend="torch", limits=LIMITS, threads=1, auth="off")) as torch_client:
        assert torch_client.get("/readyz").json()["backend"] == "torch"
        torch_answer = torch_client.post("/v1/chat/completions", json=body).json()
    onnx_answer = client.post("/v1/chat/completions", json=body).json()
    assert torch_answer["choices"][0]["message"] == onnx_answer["choices"][0]["message"]
    assert torch_answer["usage"] == onnx_answer["usage"]


def test_a_chunked_body_cannot_get_past_the_size_cap(client):
    # No Content-Length header: the cap counts the bytes as they arrive, so a chunked upload over
    # LIMITS.max_body_bytes (20 kB) gets a 413, and one under it is served.
    def chunks(n: int):
        yield b'{"prompt": "'
        for _ in range(n):
            yield b"x" * 1000
        yield b'", "max_tokens": 2}'

    r = client.post("/v1/completions", content=chunks(40), headers={"Content-Type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text
    ok = client.post("/v1/completions", content=iter([b'{"prompt": "What is a lambda?", ', b'"max_tokens": 2}']),
                     headers={"Content-Type": "application/json"})
    assert ok.status_code == 200, ok.text


def test_rate_limit_per_client_answers_429_with_retry_after(exported):
    from fastapi.testclient import TestClient

    app = create_app(exported.out_dir, limits=ServeLimits(rate_limit="3/minute"), model_id="micro", guards=False,
                     operate=False, auth="off")
    with TestClient(app) as c:
        assert [c.get("/v1/models").status_code for _ in range(3)] == [200, 200, 200]
        over = c.get("/v1/models")
        assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(over.headers["Retry-After"]) >= 1
        assert c.get("/healthz").status_code == 200  # health and metrics are never limited
        # another client (its own API key) has its own window
        assert c.get("/v1/models", headers={"Authorization": "Bearer other-client"}).status_code == 200
    with pytest.raises(InputError, match="not a rate limit"):
        create_app(exported.out_dir, limits=ServeLimits(rate_limit="lots"), model_id="micro")
