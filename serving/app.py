"""The OpenAI-compatible HTTP API over one model, and a context manager that runs it as a subprocess
(started, waited for and stopped by llmops/launch.py).

    llmops serve --model exports/v1 --port 8000          # then, with a key (llmops keys create):
    curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \
        -H "Authorization: Bearer $KEY" -d '{"messages": [{"role": "user", "content": "What is a lambda?"}]}'

Routes: POST /v1/chat/completions (SSE when "stream": true), POST /v1/completions (raw prompt,
no template), GET /v1/models, GET /healthz (process up), GET /readyz (model loaded and warmed),
GET /metrics (Prometheus).

Chat mapping: the serving prompt (MODEL/prompt.yaml, else prompts/answer.yaml) is rendered with
question = the last user message and context = the system/developer messages joined by newlines,
into the prompt's system and user messages, and those through the model's own chat template (the
plain format for a model without one). The system prompt is always the prompt file's: a client's
system message is context, never instructions. Earlier assistant turns are not part of the
single-turn template. /v1/models lists the model's chat template and special tokens, so that a
client that builds raw /v1/completions prompts (the eval runner) renders exactly what the server
would. The prompt's params give the default max_tokens, temperature and stop strings (a request's own are added).
Chat content is stripped of surrounding whitespace (training puts a space after "Answer:");
/v1/completions returns the raw text. One model per server: the request's `model` is echoed,
not matched, so a gateway can route any name to it.

/v1/* needs an API key whose role holds `chat` (serving/auth.py; `--auth off` for a private
server on loopback), within per-client limits on requests, tokens and streams (serving/ratelimit.py).
Every invalid request gets a 4xx in OpenAI's shape {"error": {message, type, param, code}}.
Generation is batched across requests (serving/batching.py): one scheduler thread owns the model
and decodes every request in flight in one batch (at most `ServeLimits.max_batch` rows), new
requests joining at step boundaries; a route only queues its request and awaits its result or
stream on the event loop, so /healthz and /metrics keep answering while requests decode. When
`max_waiting` sequences already wait for a row, a request gets 503 `server_busy` with Retry-After
at once (overload is the server's state, not the client's fault, hence not 429, which is the
per-client rate limit; the gateway retries a 503 once on the other colour).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from governance.apikeys import KeyStore, key_file
from governance.policy import load_policy
from llmops.errors import InputError
from llmops.launch import LaunchError, free_port, running_process
from llmops.prompts import Prompt
from llmops.settings import Settings
from serving.auth import ApiKeyMiddleware, check_mode
from serving.batching import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_WAITING,
    Scheduler,
    SchedulerCollector,
    ServerBusy,
    Ticket,
)
from serving.guards import BAN_OPENING
from serving.ratelimit import (
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_RATE,
    DEFAULT_TOKEN_RATE,
    BodyCapMiddleware,
    RateLimitMiddleware,
    error_json,
    parse_rate,
)
from serving.receipts import Receipts, default_receipts, last_user_text
from serving.schemas import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    Usage,
)
from serving.streaming import chat_sse, completion_sse

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/feedback", "/chat", "/healthz", "/readyz",
          "/metrics")
# With "stream": true the answer is server-sent events: one JSON chunk per `data:` line, then [DONE].
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {  # one server-sent event: a JSON chunk or [DONE]
        "type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}}},
          "description": "The completion (JSON), or with stream=true its chunks as server-sent events"}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "An invalid request, or one over a prompt or token cap"},
    401: {"model": ErrorResponse, "description": "No valid API key (serving/auth.py)"},
    403: {"model": ErrorResponse, "description": "The key's role lacks the permission"},
    413: {"model": ErrorResponse, "description": "Body over the size cap"},
    429: {"model": ErrorResponse, "description": "Over the per-client rate limit (Retry-After says when)"},
    500: {"model": ErrorResponse, "description": "Generation failed"},
    503: {"model": ErrorResponse, "description": "The server is busy: its waiting queue is full (code "
          "server_busy; Retry-After says when to try again)"},
}


@dataclass(frozen=True)
class ServeLimits:
    """Input caps; a request over any of them gets a 400 (413 for the body)."""

    max_prompt_chars: int = 16_000
    """Characters of the prompt text (chat: question + context) before tokenising."""
    max_prompt_tokens: int | None = None
    """Tokens of the rendered prompt; None means the model's context window minus one."""
    max_tokens_cap: int = 512
    """Largest max_tokens a request may ask for."""
    max_body_bytes: int = 1_000_000
    """Largest request body, counted as it arrives (Content-Length or chunked)."""
    rate_limit: str | None = DEFAULT_RATE
    """Requests to /v1/* per client (API key, else address), e.g. "600/minute"; None: no limit
    (workers behind the gateway, which limits at the edge)."""
    max_concurrent: int | None = DEFAULT_MAX_CONCURRENT
    """Requests of one client in flight at once (a stream counts until it ends); None or 0: no cap.
    Only where `rate_limit` is on: the workers behind the gateway and the harness servers have neither."""
    token_rate_limit: str | None = DEFAULT_TOKEN_RATE
    """Estimated tokens per client (serving/ratelimit.py), e.g. "100000/minute"; only where rate_limit is on."""
    max_batch: int = DEFAULT_MAX_BATCH
    """Most sequences decoded together (serving/batching.py); more wait for a row."""
    max_waiting: int = DEFAULT_MAX_WAITING
    """Most sequences waiting for a row; a request over it gets 503 server_busy at once."""


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_
        self.headers = headers


# ---- metrics -----------------------------------------------------------------------------------
class ServeMetrics:
    """Prometheus metrics in a registry of their own, so several apps can live in one process."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("llmops_http_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("llmops_http_request_duration_seconds", "Request latency until the last body byte",
                                 ["route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.in_flight = Gauge("llmops_http_requests_in_flight", "Requests being served", registry=self.registry)
        self.generated_tokens = Counter("llmops_generated_tokens", "Completion tokens generated",
                                        registry=self.registry)
        self.prompt_tokens = Counter("llmops_prompt_tokens", "Prompt tokens processed", registry=self.registry)

    def watch(self, scheduler: Scheduler) -> None:
        """Export the scheduler's batch and queue, read at scrape time (no work on the decode path)."""
        self.registry.register(SchedulerCollector(scheduler))

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware: counts, latency (to the end of a streamed body) and in-flight requests."""

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label values
        status = 500
        start = time.perf_counter()
        self.metrics.in_flight.inc()

        async def send_and_record(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


# ---- request handling --------------------------------------------------------------------------
class ServingState:
    """The loaded model and what every request needs: prompt, limits, metrics."""

    def __init__(self, generator: Any, prompt: Prompt, model_id: str, limits: ServeLimits,
                 metrics: ServeMetrics, receipts: Receipts | None = None) -> None:
        from llmops.prompts import ChatFormat

        self.generator, self.prompt, self.model_id, self.receipts = generator, prompt, model_id, receipts
        self.limits, self.metrics = limits, metrics
        self.scheduler = Scheduler(generator, max_batch=limits.max_batch, max_waiting=limits.max_waiting,
                                   prefix_cache=Settings.load().prefix_cache)
        metrics.watch(self.scheduler)
        tok = getattr(generator, "tokenizer", None)
        template = getattr(tok, "chat_template", None)
        self.chat_format = None if not isinstance(template, str) else ChatFormat(template, {
            name: value for name in ("bos_token", "eos_token", "pad_token", "unk_token")
            if isinstance(value := getattr(tok, name, None), str)})
        self.created = int(time.time())
        window = generator.max_positions
        self.max_prompt_tokens = limits.max_prompt_tokens or ((window - 1) if window else 1 << 30)
        self.ready = False

    def warm_up(self) -> None:
        """One short generation, so the first request does not pay session initialisation."""
        from serving.runtime import SamplingParams

        self.generator.generate(["Hello"], SamplingParams(max_new_tokens=2))
        self.ready = True

    def render_chat(self, messages: list[ChatMessage]) -> str:
        users = [i for i, m in enumerate(messages) if m.role == "user"]
        if not users:
            raise APIError(400, "messages must contain at least one message with role 'user'", param="messages",
                           code="invalid_value")
        question = messages[users[-1]].text()
        if not question.strip():
            raise APIError(400, f"messages[{users[-1]}].content is empty", param=f"messages.{users[-1]}.content",
                           code="invalid_value")
        context = "\n".join(m.text() for m in messages if m.role in ("system", "developer") and m.text().strip())
        chars = len(question) + len(context)
        if chars > self.limits.max_prompt_chars:
            raise APIError(400, f"messages have {chars} characters; the limit is {self.limits.max_prompt_chars}",
                           param="messages", code="prompt_too_long")
        values = {"question": question}
        if context and "context" in self.prompt.variables:
            values["context"] = context
        return self.prompt.render(self.chat_format, **values)

    def opening(self, text: str) -> tuple[int, ...]:
        """The first token `text` encodes to, special tokens skipped: the one to ban as an answer's opening."""
        special = set(getattr(getattr(self.generator, "tokenizer", None), "all_special_ids", None) or ())
        return tuple([i for i in self.generator.encode(text) if i not in special][:1])

    def check_raw_prompt(self, text: str, param: str) -> None:
        if not text.strip():
            raise APIError(400, f"{param} is empty", param=param, code="invalid_value")
        if len(text) > self.limits.max_prompt_chars:
            raise APIError(400, f"{param} has {len(text)} characters; the limit is {self.limits.max_prompt_chars}",
                           param=param, code="prompt_too_long")

    def prepare(self, texts: list[str], req: Any, stop: list[str], max_tokens: int | None,
                param: str) -> tuple[list[list[int]], Any]:
        """Tokenise and check the prompts against the caps; build the sampling params."""
        from serving.runtime import SamplingParams

        ids = [self.generator.encode(t) for t in texts]
        longest = max(len(i) for i in ids)
        if longest > self.max_prompt_tokens:
            raise APIError(400, f"the prompt has {longest} tokens; the limit is {self.max_prompt_tokens}",
                           param=param, code="context_length_exceeded")
        if max_tokens is not None and max_tokens > self.limits.max_tokens_cap:
            raise APIError(400, f"max_tokens is {max_tokens}; the limit is {self.limits.max_tokens_cap}",
                           param="max_tokens", code="invalid_value")
        window = self.generator.max_positions
        room = (window - longest) if window else self.limits.max_tokens_cap
        if max_tokens is not None and max_tokens > room:
            raise APIError(400, f"the prompt ({longest} tokens) plus max_tokens ({max_tokens}) exceeds the "
                                f"model's context window of {window} tokens", param="max_tokens",
                           code="context_length_exceeded")
        if room < 1:
            raise APIError(400, f"the prompt ({longest} tokens) fills the context window of {window} tokens",
                           param=param, code="context_length_exceeded")
        new_tokens = max_tokens or min(self.prompt.params.max_tokens, room, self.limits.max_tokens_cap)
        temperature = self.prompt.params.temperature if req.temperature is None else req.temperature
        defaults = self.prompt.params
        params = SamplingParams(max_new_tokens=new_tokens, temperature=temperature,
                                top_p=1.0 if req.top_p is None else req.top_p, seed=req.seed, stop=tuple(stop),
                                frequency_penalty=(defaults.frequency_penalty if req.frequency_penalty is None
                                                   else req.frequency_penalty),
                                presence_penalty=(defaults.presence_penalty if req.presence_penalty is None
                                                  else req.presence_penalty))
        return ids, params

    def submit(self, ids: list[list[int]], params: Any, *, stream: bool = False) -> Ticket:
        """Queue a request on the scheduler; a full queue is a 503 server_busy, never a wait."""
        try:
            return self.scheduler.submit(ids, params, stream=stream)
        except ServerBusy as exc:
            raise APIError(503, str(exc), code="server_busy", type_="server_error",
                           headers={"Retry-After": "1"}) from None

    def count(self, prompt_tokens: int, completion_tokens: int) -> Usage:
        self.metrics.prompt_tokens.inc(prompt_tokens)
        self.metrics.generated_tokens.inc(completion_tokens)
        return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                     total_tokens=prompt_tokens + completion_tokens)


_UNION_BRANCH = re.compile(r"^(constrained-str|str|int|float|bool|none|list\[.*\]|dict\[.*\]|function-\w+\[.*\])$")
_ROLES = ("system", "developer", "user", "assistant")


def validation_message(exc: RequestValidationError) -> tuple[str, str | None, str]:
    """(message, param, code) of a request body that failed validation, for a 400 in OpenAI's shape."""
    errors = exc.errors()
    if not errors:
        return "invalid request", None, "invalid_request"
    # the deepest error: of a union's failed branches, the one that got furthest into the value
    err = max(errors, key=lambda e: len(e.get("loc", ())))
    # pydantic names union branches ("constrained-str", "list[...]") and a discriminated message's
    # role in the location; the client's field is what is left: messages.0.content, prompt.1
    loc = [str(p) for p in err.get("loc", ()) if p != "body" and not _UNION_BRANCH.match(str(p))]
    if len(loc) > 2 and loc[0] == "messages" and loc[1].isdigit() and loc[2] in _ROLES:
        del loc[2]
    if err.get("type") == "union_tag_invalid":  # a message role that is none of the four
        loc.append("role")
    param = ".".join(loc) or None
    if err.get("type") in ("string_too_short", "string_pattern_mismatch") and param:
        return f"{param} is empty", param, "invalid_value"
    if err.get("type") == "json_invalid":
        return f"request body is not valid JSON: {err.get('msg')}", None, "invalid_json"
    if err.get("type") == "missing":
        return f"missing required field '{param}'", param, "missing_field"
    return f"{param or 'body'}: {err.get('msg')} (got {err.get('input')!r:.80})", param, "invalid_value"


# ---- the app -----------------------------------------------------------------------------------
def default_model_id(model_dir: Path) -> str:
    """The folder's name; for an export variant folder (fp32/, int8/) its parent's name too: "v3-int8"."""
    path = Path(model_dir).resolve()
    return f"{path.parent.name}-{path.name}" if path.name in ("fp32", "int8", "int4", "fp16") else path.name


def create_app(model_dir: str | Path, prompt: Prompt | str | Path | None = None, *, backend: str = "onnx",
               model_id: str | None = None, threads: int | None = None, limits: ServeLimits | None = None,
               generator: Any = None, operate: bool | None = None, guards: bool | None = None,
               auth: str = "keys") -> FastAPI:
    """Load the model (InputError if it cannot be), warm it up, and return the FastAPI app.

    `model_dir`: an export root (serves fp32), an export variant folder, or, with backend="torch",
    a Hugging Face model folder. `prompt`: a Prompt, a prompt id/path, or None for the model's own.
    `auth`: "keys" (an API key with the `chat` permission on /v1/*, serving/auth.py) or "off".
    """
    from llmops.prompts import load_prompt
    from serving.export import serving_prompt
    from serving.runtime import find_onnx_dir, load_generator

    model_dir = Path(model_dir)
    limits = limits or ServeLimits()
    rate = parse_rate(limits.rate_limit)  # a bad limit is an input error before the model loads
    check_mode(auth)
    if generator is None:
        generator = load_generator(model_dir, backend, threads=threads)
    if prompt is None:
        prompt = serving_prompt(find_onnx_dir(model_dir) if backend == "onnx" else model_dir)
    elif not isinstance(prompt, Prompt):
        prompt = load_prompt(str(prompt))
    metrics = ServeMetrics()
    settings = Settings.load()  # LLMOPS_GUARDS / LLMOPS_OPERATE / the receipt key, as the worker was started with
    state = ServingState(generator, prompt, model_id or default_model_id(model_dir), limits, metrics,
                         default_receipts(settings))
    state.warm_up()

    app = FastAPI(title="llmops serving", version="1", docs_url=None, redoc_url=None)
    app.state.serving = state
    if guards if guards is not None else settings.guards:
        # Input guards (size, injection, PII requests, toxicity) and output guards (HTML escaping,
        # PII redaction) share their detectors with the safety suite (governance/detectors.py).
        # Added before the metrics middleware so that one stays outermost and counts blocked requests.
        from serving.guards import GuardConfig, GuardMiddleware, check_request

        config = GuardConfig(answer_in_scope=settings.scope_check)
        app.add_middleware(GuardMiddleware, config=config, registry=metrics.registry)
        check_request(["warm up"])  # load the embedding model now, not on the first user's request
        if config.answer_in_scope:
            from governance.scope import load_head

            load_head()  # a missing or broken scope head stops the server here, not a request later
    if auth == "keys":  # before the guards read the body; inside the rate limit, which slows key guessing
        app.add_middleware(ApiKeyMiddleware, keys=KeyStore(key_file(settings)), policy=load_policy(settings=settings),
                           settings=settings, gateway_token=settings.secret("worker_token"))
    if rate is not None:  # inside the metrics middleware, so a 401 or 429 is counted
        app.add_middleware(RateLimitMiddleware, rate=rate, max_concurrent=limits.max_concurrent,
                           token_rate=parse_rate(limits.token_rate_limit))
    app.add_middleware(BodyCapMiddleware, max_bytes=limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if operate if operate is not None else settings.operate:
        mount_operations(app)

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_json(exc.status, exc.message, exc.type, exc.param, exc.code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param, code = validation_message(exc)
        return error_json(400, message, "invalid_request_error", param, code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        # keeps Allow on a 405 and WWW-Authenticate on a 401
        return error_json(exc.status_code, str(exc.detail), kind, headers=getattr(exc, "headers", None))

    @app.exception_handler(InputError)
    async def input_error(_: Request, exc: InputError) -> JSONResponse:
        return error_json(400, str(exc), "invalid_request_error", exc.field, "invalid_value")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok = state.ready
        return JSONResponse(status_code=200 if ok else 503,
                            content={"status": "ready" if ok else "loading", "model": state.model_id,
                                     "backend": state.generator.backend})

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def metrics_route() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST

        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelList, responses={k: ERROR_RESPONSES[k] for k in (401, 403, 429)})
    async def models() -> ModelList:
        chat = state.chat_format
        return ModelList(data=[ModelCard(id=state.model_id, created=state.created,
                                         chat_template=chat.template if chat else None,
                                         special_tokens=chat.special_tokens if chat else None)])

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses={**STREAMED, **ERROR_RESPONSES})
    async def chat(req: ChatCompletionRequest, request: Request) -> Any:
        text = state.render_chat(req.messages)
        question = last_user_text(req.messages)
        stop = [*state.prompt.params.stop, *req.stop_list()]
        (ids,), params = state.prepare([text], req, stop, req.max_completion_tokens or req.max_tokens, "messages")
        banned = request.scope.get("state", {}).get(BAN_OPENING)  # set by the guards (serving/guards.py in_scope)
        if banned:
            params = replace(params, first_token_bans=state.opening(banned))
        model = req.model or state.model_id
        ticket = state.submit([ids], params, stream=bool(req.stream))
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return sse_response(chat_sse(state, ticket, model, include_usage, question), ticket)
        (done,) = await ticket.aresult()
        usage = state.count(done.prompt_tokens, done.completion_tokens)
        cid, answer = f"chatcmpl-{uuid.uuid4().hex}", done.text.strip()
        return ChatCompletion(id=cid, created=int(time.time()), model=model, usage=usage,
                              choices=[ChatChoice(index=0, finish_reason=done.finish_reason,
                                                  message={"role": "assistant", "content": answer})],
                              llmops_receipt=state.receipts.issue(cid, model, question, answer) if state.receipts
                              else None)

    @app.post("/v1/completions", response_model=Completion, responses={**STREAMED, **ERROR_RESPONSES})
    async def completions(req: CompletionRequest) -> Any:
        texts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        for i, t in enumerate(texts):
            state.check_raw_prompt(t, "prompt" if isinstance(req.prompt, str) else f"prompt.{i}")
        if req.stream and len(texts) > 1:
            raise APIError(400, "stream supports a single prompt", param="prompt", code="invalid_value")
        ids, params = state.prepare(texts, req, req.stop_list(), req.max_tokens, "prompt")
        model = req.model or state.model_id
        ticket = state.submit(ids, params, stream=bool(req.stream))
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return sse_response(completion_sse(state, ticket, model, include_usage), ticket)
        done = await ticket.aresult()
        usage = state.count(sum(d.prompt_tokens for d in done), sum(d.completion_tokens for d in done))
        return Completion(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model, usage=usage,
                          choices=[CompletionChoice(index=i, text=d.text, finish_reason=d.finish_reason)
                                   for i, d in enumerate(done)])

    stop_scheduler_on_shutdown(app)
    document_errors_as_400(app)
    return app


def sse_response(body: AsyncIterator[str], ticket: Ticket) -> StreamingResponse:
    """The SSE response of a queued request. The body cancels the request when it is closed (the
    client left mid-stream); a body never started (the client left before the first byte) is never
    closed, so its garbage collection cancels the request too."""
    weakref.finalize(body, ticket.cancel)
    return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def stop_scheduler_on_shutdown(app: FastAPI) -> None:
    """Stop the scheduler thread when the server stops (requests still in flight get an error)."""
    previous = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(inner: Any) -> AsyncIterator[Any]:
        async with previous(inner) as state:
            yield state
        app.state.serving.scheduler.stop()

    app.router.lifespan_context = lifespan


def document_errors_as_400(app: FastAPI) -> None:
    """The OpenAPI says what the app does: a body that fails validation gets a 400 in OpenAI's
    error shape (the handler above), not FastAPI's default 422."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for ops in schema.get("paths", {}).values():
                for op in ops.values():
                    responses = op.get("responses", {})
                    if responses.pop("422", None) is not None and "400" not in responses:
                        responses["400"] = {"description": "An invalid request body",
                                            "content": {"application/json": {"schema": {
                                                "$ref": "#/components/schemas/ErrorResponse"}}}}
            app.openapi_schema = schema  # ErrorResponse is in components: the chat routes declare it
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def mount_operations(app: FastAPI) -> None:
    """The operating side: whylogs profiles of chat traffic per window, the chat page at /chat and
    the feedback API at /v1/feedback (role `user`). Off with LLMOPS_OPERATE=0 (the test suite's
    many short-lived workers) or create_app(operate=False)."""
    from serving.feedback import FeedbackStore, chat_router, feedback_router
    from serving.monitoring.drift import load_config
    from serving.monitoring.profiles import ChatProfileMiddleware, ProfileWriter

    settings = Settings.load()
    writer = ProfileWriter(settings.home, window_minutes=load_config().window_minutes)
    app.add_middleware(ChatProfileMiddleware, writer=writer)
    app.include_router(feedback_router(FeedbackStore.default(), KeyStore(key_file(settings)),
                                       receipts=app.state.serving.receipts))
    app.include_router(chat_router())
    previous = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(inner: Any) -> AsyncIterator[Any]:
        async with previous(inner) as state:
            yield state
        writer.close()  # flush the last window's profile on a graceful stop

    app.router.lifespan_context = lifespan


# ---- a real server in a subprocess -------------------------------------------------------------
@contextlib.contextmanager
def running_server(model_dir: str | Path, port: int = 0, backend: str = "onnx", *, host: str = "127.0.0.1",
                   prompt: str | Path | None = None, model_id: str | None = None, threads: int | None = None,
                   timeout: float = 120.0, env: dict[str, str] | None = None,
                   rate_limit: str = "off", auth: str = "off") -> Iterator[str]:
    """Run `llmops serve` as a uvicorn subprocess on `host` (a free port when port=0); yield its base
    URL (e.g. "http://127.0.0.1:41234") once /readyz answers 200; terminate it on exit.

    It is a private server for one harness (an eval, the gate, a load test, the safety suite) on
    loopback, all of whose requests come from one address, so its per-client rate limit and its API
    keys are off unless `rate_limit` and `auth` say.

    Raises InputError if the server exits with code 2 (bad model or prompt), RuntimeError
    (llmops.launch.LaunchError) if it dies otherwise or is not ready within `timeout` seconds; the
    message holds the server log's tail.
    """
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "llmops", "serve", "--model", str(Path(model_dir).resolve()), "--host", host,
           "--port", str(port), "--backend", backend, "--rate-limit", rate_limit, "--auth", auth]
    if prompt is not None:
        cmd += ["--prompt", str(Path(prompt).resolve()) if Path(prompt).is_file() else str(prompt)]
    if model_id:
        cmd += ["--model-id", model_id]
    if threads:
        cmd += ["--threads", str(threads)]
    base_url = f"http://{host}:{port}"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(running_process(cmd, base_url + "/readyz", env={**os.environ, **(env or {})},
                                                timeout=timeout, what="the server"))
        except LaunchError as exc:
            if exc.returncode == 2:
                raise InputError(f"the server refused its input (exit 2):\n{exc.tail}", file=str(model_dir)) from None
            raise
        yield base_url
