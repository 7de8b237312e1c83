"""A small client for any OpenAI-compatible server (ours, vLLM, TGI, a hosted API).

    .venv/bin/python -c "from evals.client import OpenAIClient; print(OpenAIClient('http://127.0.0.1:8000').complete('Hi'))"

Evals talk to models only through this client, never through serving's Python code, so the same
suites run against any endpoint. Connection failures (refused, reset, timed out) are retried with
exponential backoff, since a server that was just started may not accept yet; so are 429/502/503/504,
which mean "busy or starting". Any other non-2xx answer raises at once with the status and the body.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from llmops.errors import InputError
from llmops.prompts import ChatFormat

# Status codes a healthy server sends while busy or starting: worth another try.
_RETRY_STATUS = {429, 502, 503, 504}


class EndpointError(InputError):
    """The endpoint could not be reached, or answered with an error. The CLI exits 2.

    `status` is the HTTP status when the server answered, None when it never did.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class OpenAIClient:
    """POST /v1/completions and /v1/chat/completions; the text of the first choice is returned."""

    def __init__(self, base_url: str, *, api_key: str | None = None, model: str | None = None,
                 timeout: float = 120.0, retries: int = 3, backoff: float = 0.5) -> None:
        """
        base_url: server root, with or without a trailing /v1 (`http://127.0.0.1:8000`).
        api_key: sent as `Authorization: Bearer <key>` when given.
        model: the `model` field of each request; None: resolve_model() takes the server's first.
        timeout: seconds per request (connect and read).
        retries: extra attempts after a connection error or a 429/502/503/504.
        backoff: seconds before the first retry, doubled each time.
        """
        root = base_url.rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        if not root.startswith(("http://", "https://")):
            raise InputError(f"endpoint must be an http(s) URL, got {base_url!r}", field="endpoint")
        self.base_url = root
        self.retries, self.backoff = retries, backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=root, timeout=timeout, headers=headers)
        self.model = model  # None until resolve_model() asks the server
        self.chat_format: Any = None  # the served model's chat template, from resolve_model()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                if last:
                    raise EndpointError(f"{method} {self.base_url}{path} failed after {attempt + 1} "
                                        f"attempts: {type(exc).__name__}: {exc}") from None
            else:
                if response.is_success:
                    try:
                        return response.json()
                    except ValueError:
                        raise EndpointError(f"{method} {self.base_url}{path}: answer is not JSON: "
                                            f"{response.text[:200]!r}", status=response.status_code) from None
                if response.status_code not in _RETRY_STATUS or last:
                    raise EndpointError(f"{method} {self.base_url}{path} -> HTTP {response.status_code}: "
                                        f"{response.text[:500]}", status=response.status_code)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    def resolve_model(self) -> str:
        """Check the server answers (GET /v1/models) and settle the `model` field of later requests.

        An unreachable server raises here, once, instead of in every parallel request. A server
        without /v1/models is fine when the model name was given.
        Also settles `chat_format`: the chat template the server lists for the model (our servers
        do, in /v1/models), so raw prompts are rendered as the model was trained; None: plain format.
        """
        try:
            cards = self._request("GET", "/v1/models").get("data", [])
        except EndpointError as exc:
            if exc.status is None or self.model is None:
                raise
            return self.model
        if self.model is None:
            self.model = cards[0]["id"] if cards else "default"
        card = next((c for c in cards if c.get("id") == self.model), cards[0] if cards else {})
        self.chat_format = ChatFormat.from_dict({"template": card.get("chat_template"),
                                                 "special_tokens": card.get("special_tokens")})
        return self.model

    def models(self) -> list[str]:
        return [m["id"] for m in self._request("GET", "/v1/models").get("data", [])]

    def complete(self, prompt: str, max_tokens: int = 64, temperature: float = 0.0,
                 stop: list[str] | None = None, frequency_penalty: float = 0.0, presence_penalty: float = 0.0) -> str:
        """The completion text for `prompt` (first choice). The penalties are always sent, so a
        server's own defaults never change what a prompt file's params ask for."""
        body: dict[str, Any] = {"model": self.model or "default", "prompt": prompt, "max_tokens": max_tokens,
                                "temperature": temperature, "frequency_penalty": frequency_penalty,
                                "presence_penalty": presence_penalty}
        if stop:
            body["stop"] = list(stop)
        data = self._request("POST", "/v1/completions", body)
        try:
            return data["choices"][0]["text"]
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"/v1/completions answer has no choices[0].text: {str(data)[:200]}") from None

    def chat(self, messages: list[dict[str, str]], max_tokens: int = 64, temperature: float = 0.0,
             stop: list[str] | None = None, frequency_penalty: float = 0.0, presence_penalty: float = 0.0) -> str:
        """The assistant message content for `messages` ([{role, content}, ...], first choice)."""
        body: dict[str, Any] = {"model": self.model or "default", "messages": messages, "max_tokens": max_tokens,
                                "temperature": temperature, "frequency_penalty": frequency_penalty,
                                "presence_penalty": presence_penalty}
        if stop:
            body["stop"] = list(stop)
        data = self._request("POST", "/v1/chat/completions", body)
        try:
            return data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"/v1/chat/completions answer has no choices[0].message.content: "
                                f"{str(data)[:200]}") from None
