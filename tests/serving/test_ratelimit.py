"""The front-door limits (serving/ratelimit.py) on a bare app, and that the gateway puts them in front."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from serving.ratelimit import BodyCapMiddleware, RateLimitMiddleware, parse_rate


def _echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/echo")
    async def echo(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    return app


def test_body_cap_counts_chunked_bytes_and_replays_the_body() -> None:
    client = TestClient(BodyCapMiddleware(_echo_app(), max_bytes=100))
    assert client.post("/v1/echo", content=iter([b"x" * 60, b"y" * 30])).json() == {"bytes": 90}
    over = client.post("/v1/echo", content=iter([b"x" * 60, b"y" * 60]))  # chunked: no Content-Length
    assert over.status_code == 413 and over.json()["error"]["code"] == "request_too_large"
    assert client.post("/v1/echo", content=b"z" * 101).status_code == 413  # declared


def test_rate_limit_is_per_client() -> None:
    client = TestClient(RateLimitMiddleware(_echo_app(), parse_rate("2/minute")))
    a = {"Authorization": "Bearer key-a"}
    assert [client.post("/v1/echo", headers=a).status_code for _ in range(3)] == [200, 200, 429]
    assert client.post("/v1/echo", headers={"Authorization": "Bearer key-b"}).status_code == 200


def test_the_gateway_puts_the_body_cap_and_the_rate_limit_in_front(llmops_home: Path) -> None:
    from llmops.settings import Settings
    from serving.gateway.app import create_gateway
    from serving.gateway.core import GatewayOptions

    settings = Settings(home=llmops_home)
    app = create_gateway(settings, GatewayOptions(rate_limit="5/second", max_body_bytes=1234))
    assert isinstance(app, BodyCapMiddleware) and app.max_bytes == 1234
    assert isinstance(app.app, RateLimitMiddleware)
    assert not isinstance(create_gateway(settings, GatewayOptions(rate_limit="off")).app, RateLimitMiddleware)


def test_concurrent_requests_per_client_are_capped() -> None:
    import asyncio

    import httpx

    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_app(scope: dict, receive, send) -> None:  # a long stream, held open until released
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    limited = RateLimitMiddleware(slow_app, None, max_concurrent=1)
    a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limited), base_url="http://t") as client:
            first = asyncio.create_task(client.post("/v1/x", headers=a))
            await entered.wait()
            second = await client.post("/v1/x", headers=a)
            assert second.status_code == 429 and second.json()["error"]["code"] == "concurrency_limit_exceeded"
            assert second.headers["Retry-After"] == "1"
            entered.clear()
            other = asyncio.create_task(client.post("/v1/x", headers=b))  # another key has its own count
            await entered.wait()
            release.set()
            assert (await first).status_code == 200 and (await other).status_code == 200
            assert (await client.post("/v1/x", headers=a)).status_code == 200  # the slot came back

    asyncio.run(scenario())


def test_tokens_per_minute_are_charged_at_arrival_per_client() -> None:
    from serving.ratelimit import DEFAULT_COMPLETION_TOKENS, estimated_tokens

    question = {"messages": [{"role": "user", "content": "What is a lambda?"}]}
    prompt_cost = estimated_tokens(json.dumps(question).encode()) - DEFAULT_COMPLETION_TOKENS
    assert 0 < prompt_cost < 20
    assert estimated_tokens(json.dumps({**question, "max_tokens": 300, "n": 2}).encode()) == prompt_cost + 600
    assert estimated_tokens(b"x" * 400) == 100 + DEFAULT_COMPLETION_TOKENS  # not JSON: never free

    client = TestClient(RateLimitMiddleware(_echo_app(), None, token_rate=parse_rate("1000/minute")))
    a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    body = {**question, "max_tokens": 300}
    sent = [client.post("/v1/echo", headers=a, content=json.dumps(body)) for _ in range(4)]
    # three requests of ~305 tokens fit in 1000; the fourth is over and is refused before the app runs
    assert [r.status_code for r in sent] == [200, 200, 200, 429]
    assert sent[0].json() == {"bytes": len(json.dumps(body).encode())}  # the app still reads the whole body
    over = sent[3]
    assert over.json()["error"]["code"] == "token_rate_limit_exceeded" and int(over.headers["Retry-After"]) >= 1
    # a small request of the same client still fits in what is left; another client has its own budget
    assert client.post("/v1/echo", headers=a, json={**question, "max_tokens": 10}).status_code == 200
    assert client.post("/v1/echo", headers=b, json=body).status_code == 200
