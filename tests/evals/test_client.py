"""The OpenAI-compatible client against a real HTTP server on loopback.

    .venv/bin/pytest tests/evals/test_client.py
"""

from __future__ import annotations

import pytest

from evals.client import EndpointError, OpenAIClient
from llmops.errors import InputError
from llmops.launch import free_port
from tests.evals.openai_stub import REFUSAL, make_app, serve


def test_complete_and_chat(stub_url: str, stub_app) -> None:
    with OpenAIClient(stub_url + "/v1/") as client:
        assert client.resolve_model() == "stub-model"  # asked from /v1/models
        text = client.complete("### Question:\nWhat is the capital of France?\n### Answer:", max_tokens=8,
                               temperature=0.0, stop=["###"])
        assert text.strip() == REFUSAL
        sent = stub_app.state.requests[-1]
        # the penalties are always sent: a server's defaults must not change a prompt file's params
        assert sent == {"model": "stub-model", "prompt": sent["prompt"], "max_tokens": 8, "temperature": 0.0,
                        "stop": ["###"], "frequency_penalty": 0.0, "presence_penalty": 0.0}
        reply = client.chat([{"role": "user", "content": "What is a lambda?"}], max_tokens=16)
        assert "anonymous function" in reply


def test_non_2xx_is_a_clear_error(stub_url: str) -> None:
    with OpenAIClient(stub_url, model="m", retries=0) as client:
        with pytest.raises(EndpointError, match="HTTP 500.*model crashed") as info:
            client.complete("FAIL500")
        assert info.value.status == 500
        with pytest.raises(EndpointError, match="HTTP 400") as info:
            client.chat([{"role": "user", "content": "FAIL400"}])
        assert info.value.status == 400


def test_retries_a_busy_server(stub_url: str) -> None:
    with OpenAIClient(stub_url, model="m", retries=2, backoff=0.01) as client:
        assert client.complete("FLAKY once") == " I do not know."
    with OpenAIClient(stub_url, model="m", retries=0) as client, pytest.raises(EndpointError, match="503"):
        client.complete("FLAKY twice")


def test_connection_errors_are_retried_then_reported() -> None:
    port = free_port()  # free a moment ago: nothing listens there
    with OpenAIClient(f"http://127.0.0.1:{port}", model="m", retries=2, backoff=0.01) as client:
        with pytest.raises(EndpointError, match="failed after 3 attempts: ConnectError") as info:
            client.complete("hi")
    assert info.value.status is None
    assert isinstance(info.value, InputError)  # the CLI exits 2


def test_api_key_header() -> None:
    with serve(make_app(api_key="s3cret")) as url:
        with OpenAIClient(url, model="m", api_key="s3cret") as client:
            assert client.complete("What is a lambda?").strip().startswith("A lambda")
        with OpenAIClient(url, model="m", retries=0) as client, pytest.raises(EndpointError, match="401"):
            client.complete("What is a lambda?")


def test_rejects_a_non_http_endpoint() -> None:
    with pytest.raises(InputError, match="http"):
        OpenAIClient("127.0.0.1:8000")
