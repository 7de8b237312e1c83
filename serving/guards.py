"""Runtime guards of the worker API: input guards (size, injection, PII requests, toxicity, smuggling)
and output guards (redact PII, escape HTML), built on governance/detectors.py.

    .venv/bin/pytest tests/serving/test_guards.py

The safety suite (evals/safety_runner.py) measures these same detectors, so its block and
false-alarm rates are what production enforces. Plain functions (`check_request`,
`guard_output`) plus an ASGI middleware that serving/app.py mounts:

    from serving.guards import GuardConfig, GuardMiddleware
    app.add_middleware(GuardMiddleware, config=GuardConfig(), registry=metrics.registry)
    app.add_middleware(MetricsMiddleware, ...)   # added after, so it is outermost and counts blocks

A blocked request gets an OpenAI-shaped answer (block_status 200, the default): a chat
completion (or text completion) whose content is the refusal sentence and whose finish_reason is
"content_filter", as OpenAI answers filtered content; with block_status 400 it is an error
{"error": {"type": "invalid_request_error", "code": "content_filter", ...}}. Either way the header
`x-llmops-guard-flag: input:<kinds>` is set (the gateway counts it as a "worker" guard flag) and
`llmops_guard_flags_total{direction,kind}` is incremented once per flagged kind.

Output guards: a JSON completion is rewritten before it is sent (PII -> "[EMAIL]", "<" -> "&lt;"),
with the header `x-llmops-guard-flag: output:<kinds>`. A streamed completion is rewritten event by
event: HTML escaping is per character, so it applies to each delta as is; PII redaction holds back
the last `stream_holdback` characters of each choice, so that a match split across deltas is
still seen whole (an item longer than the holdback can slip through; 64 characters covers
emails, phones, cards and IBANs).

The scope check (governance/scope.py, `GuardConfig.answer_in_scope`, LLMOPS_SCOPE_CHECK=0 turns it off):
a chat request that passed the input guards, whose last user message the scope head is sure is about
Python and whose attack probability is under the ceiling, is sent on with BAN_OPENING in the ASGI
scope's state; serving/app.py then bans the refusal's first token as the answer's opening. It is
counted in `llmops_scope_answers_total`. Raw /v1/completions are never judged (their prompt carries
its own template).

A streamed answer's headers are sent before its text is seen, so its output-guard kinds travel in
the stream itself: an SSE comment event just before `data: [DONE]`,

    : x-llmops-guard-flag output:pii,html

(GUARD_COMMENT; only when something was flagged). SSE clients ignore comment lines (the `openai`
client, the chat page, a `data:` line parser), so the answer reads the same; the gateway counts
it as a "worker" guard flag of its colour (serving/gateway/proxy.py), like the header of a JSON
answer. A blocked streamed request has the header, as it is answered whole.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from governance.detectors import (
    SCRIPT_URL_TEXT,
    Detection,
    DetectorConfig,
    detect_html,
    detect_prompt_leak,
    neutralise_script_urls,
    scan_inputs_scored,
)
from governance.pii import find_pii, redact
from governance.scope import ScopeVerdict, judge
from serving.schemas import ChatCompletionRequest, CompletionRequest

GUARDED_PATHS = ("/v1/chat/completions", "/v1/completions")
GUARD_HEADER = "x-llmops-guard-flag"
BAN_OPENING = "llmops.ban_opening"
"""Key in the ASGI scope's state: the text whose first token may not open the answer (see `in_scope`)."""
GUARD_COMMENT = f": {GUARD_HEADER} "
"""Starts the SSE comment line that carries a streamed answer's output-guard kinds (module docstring)."""
REFUSAL = "I can only help with questions about Python."  # prompts/answer.yaml's refusal sentence
# What decides a guard verdict besides this module (relative to the repository root): the eval caches'
# keys hash them (llmops/jobs/pr_gate.py RESULT_CODE, llmops/jobs/base_eval.py), because the guards
# answer some eval cases themselves.
GUARD_FILES = ("serving/guards.py", "governance/detectors.py", "governance/normalise.py", "governance/classifier.py",
               "governance/models/injection_head.json", "governance/detector_references.yaml", "governance/pii.py",
               "governance/scope.py", "governance/models/scope_head.json")


@dataclass(frozen=True)
class GuardConfig:
    """What the guards check and how a block is answered."""

    max_input_chars: int = 8000
    """Characters of user-controlled text (all messages or prompts together) a request may carry."""
    block_kinds: tuple[str, ...] = ("size", "injection", "pii_request", "toxicity", "malformed")
    """Input detections that block a request; others are only counted."""
    redact_pii: bool = True
    """Replace PII in outputs with [KIND] (governance.pii.redact)."""
    escape_html: bool = True
    """HTML-escape outputs that hold any tag, so a page that renders them runs nothing."""
    block_status: int = 200
    """200: a completion with finish_reason "content_filter"; 400: an OpenAI error with code "content_filter"."""
    refusal: str = REFUSAL
    """The text of a blocked request's completion."""
    stream_holdback: int = 64
    """Characters of a streamed choice held back so PII split across deltas is redacted whole."""
    detectors: DetectorConfig = field(default_factory=DetectorConfig)
    """Thresholds of the shared detectors."""
    system_prompt: str | None = None
    """The system prompt whose leak the output guard blocks; None: the serving app's own prompt
    (app.state.serving.prompt's system messages), or no leak check where there is none."""
    block_prompt_leak: bool = True
    """Replace an answer that leaks the system prompt (its canary, or a run of its words) with the
    refusal and finish_reason "content_filter", whatever the question was."""
    neutralise_script_urls: bool = True
    """Prefix javascript:/vbscript:/data:text/html URLs outside HTML (markdown links) with "unsafe:"."""
    answer_in_scope: bool = True
    """Keep the refusal from opening the answer of a chat question that governance/scope.py is sure is
    about Python and holds no attack (the model over-refuses such questions on its own)."""
    raw_completions: str = "size_only"
    """/v1/completions takes a caller-built prompt, template headers ("### System:") included: the eval
    runner and parity checks send exactly that. "size_only" applies only the size cap there (output
    guards still run); "full" runs every input detector, which blocks any templated prompt."""

    def __post_init__(self) -> None:
        if self.block_status not in (200, 400):
            raise ValueError("block_status must be 200 or 400")
        if self.raw_completions not in ("size_only", "full"):
            raise ValueError("raw_completions must be 'size_only' or 'full'")


@dataclass(frozen=True)
class InputVerdict:
    detections: list[Detection]
    blocked_by: list[str]
    """Kinds (in config.block_kinds) that block the request; empty: it may pass."""
    attack: float | None = None
    """The trained detector's highest attack probability over every variant of every text (None: not scanned)."""

    @property
    def blocked(self) -> bool:
        return bool(self.blocked_by)


# ---------------------------------------------------------------- plain functions


def _content_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # joined exactly as serving/schemas.py joins them for the model: the guard sees the model's text
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def request_texts(body: Any) -> list[str]:
    """The user-controlled texts of a chat or completion request: every message's content, every prompt.

    All roles count: through the API the caller writes system messages too.
    """
    if not isinstance(body, dict):
        return []
    texts = [_content_text(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict)]
    prompt = body.get("prompt")
    texts += [prompt] if isinstance(prompt, str) else [p for p in prompt or [] if isinstance(p, str)]
    return [t for t in texts if t.strip()]


def is_valid_request(path: str, body: dict[str, Any]) -> bool:
    """Whether `body` is a valid request of route `path` (serving/schemas.py)."""
    from pydantic import ValidationError

    model = ChatCompletionRequest if path == "/v1/chat/completions" else CompletionRequest
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


def check_request(texts: list[str], config: GuardConfig | None = None, *, size_only: bool = False) -> InputVerdict:
    """Size cap first (no model time is spent on oversized input), then the shared input detectors."""
    config = config or GuardConfig()
    chars = sum(len(t) for t in texts)
    if chars > config.max_input_chars:
        size = Detection("size", True, float(chars), f"{chars} characters; the limit is {config.max_input_chars}")
        return InputVerdict([size], ["size"] if "size" in config.block_kinds else [])
    if size_only:
        return InputVerdict([], [])
    if not texts:
        return InputVerdict([], [])
    found, scores = scan_inputs_scored(texts, config.detectors)
    detections = [d for f in found for d in f]
    kinds = list(dict.fromkeys(d.kind for d in detections))
    attack = None if None in scores else max(s for s in scores if s is not None)
    return InputVerdict(detections, [k for k in kinds if k in config.block_kinds], attack)


def last_user_message(body: dict[str, Any]) -> str:
    """The text of a chat request's last user message ("" when there is none)."""
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    return _content_text(users[-1].get("content")) if users else ""


def in_scope(request: dict[str, Any], verdict: InputVerdict) -> ScopeVerdict | None:
    """governance/scope.py's verdict on a chat request that passed the input guards (None: not judged,
    because the detector's attack probability is unknown or there is no user message)."""
    question = last_user_message(request)
    if verdict.attack is None or not question.strip():
        return None
    return judge(question, verdict.attack)


def guard_output(text: str, config: GuardConfig | None = None, system_prompt: str | None = None,
                 ) -> tuple[str, list[str]]:
    """(the text made safe, the kinds found): an answer that leaks `system_prompt` becomes the refusal
    (kind "prompt_leak"; the caller marks it content_filter); else PII redacted to [KIND], HTML
    escaped if it holds a tag, and script URLs outside HTML made inert."""
    config = config or GuardConfig()
    system_prompt = system_prompt or config.system_prompt
    if config.block_prompt_leak and system_prompt and detect_prompt_leak(text, system_prompt, refusal=config.refusal).flagged:
        return config.refusal, ["prompt_leak"]
    kinds = []
    if config.redact_pii and find_pii(text):
        text = redact(text)
        kinds.append("pii")
    if config.escape_html and detect_html(text).flagged:
        text = html.escape(text, quote=False)
        kinds.append("html")
    if config.neutralise_script_urls:
        text, found = neutralise_script_urls(text)
        if found:
            kinds.append("script_url")
    return text, kinds


def blocked_body(path: str, request: Any, kinds: list[str], config: GuardConfig) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of a blocked request, in OpenAI's shape (see the module docstring)."""
    import time
    import uuid

    reason = f"the request was blocked by the input guard ({', '.join(kinds)})"
    if config.block_status == 400:
        return 400, {"error": {"message": reason, "type": "invalid_request_error", "param": "messages",
                               "code": "content_filter"}}
    model = request.get("model") if isinstance(request, dict) else None
    guard = {"blocked": True, "kinds": kinds, "message": reason}
    if path.endswith("/chat/completions"):
        return 200, {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                     "model": model or "guarded", "llmops_guard": guard,
                     "choices": [{"index": 0, "finish_reason": "content_filter", "logprobs": None,
                                  "message": {"role": "assistant", "content": config.refusal}}],
                     "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
    return 200, {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                 "model": model or "guarded", "llmops_guard": guard,
                 "choices": [{"index": 0, "text": config.refusal, "finish_reason": "content_filter", "logprobs": None}],
                 "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def _sse_from(body: dict[str, Any]) -> bytes:
    """A blocked completion as a one-chunk SSE stream, for requests that asked for "stream": true."""
    choice = body["choices"][0]
    if body["object"] == "chat.completion":
        chunk = {**body, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": choice["message"], "finish_reason": "content_filter"}]}
    else:
        chunk = body
    return f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()


class StreamGuard:
    """Output guard of one streamed choice: feed deltas, get safe text now, flush the rest at the end.

    The last `stream_holdback` characters are held back, so a PII match, a script URL or the system
    prompt's canary split across deltas is seen whole before any of it is sent. Once the text seen
    so far leaks the system prompt, nothing more is sent and `blocked` is set (the middleware ends
    the choice with finish_reason "content_filter")."""

    def __init__(self, config: GuardConfig, system_prompt: str | None = None) -> None:
        self.config, self.pending, self.kinds = config, "", set()
        self.system_prompt = (system_prompt or config.system_prompt) if config.block_prompt_leak else None
        self.seen, self.blocked = "", False

    def _safe(self, text: str) -> str:
        if self.config.redact_pii and find_pii(text):
            text = redact(text)
            self.kinds.add("pii")
        if self.config.escape_html and ("<" in text or ">" in text):
            # Escaping each delta is exact: it is a per-character substitution.
            self.kinds.add("html")
            text = html.escape(text, quote=False)
        if self.config.neutralise_script_urls:
            text, found = neutralise_script_urls(text)
            if found:
                self.kinds.add("script_url")
        return text

    def _leaks(self, delta: str) -> bool:
        if not self.system_prompt:
            return False
        self.seen += delta
        # A leak long enough to count fits in the recent text; checking only it keeps each delta cheap.
        recent = self.seen[-(4 * self.config.stream_holdback + len(delta)):]
        if detect_prompt_leak(recent, self.system_prompt, refusal=self.config.refusal).flagged:
            self.blocked, self.pending = True, ""
            self.kinds.add("prompt_leak")
        return self.blocked

    def feed(self, delta: str) -> str:
        if self.blocked or self._leaks(delta):
            return ""
        if not (self.config.redact_pii or self.config.neutralise_script_urls or self.system_prompt):
            return self._safe(delta)
        self.pending += delta
        cut = max(0, len(self.pending) - self.config.stream_holdback)
        spans = [(m.start, m.end) for m in find_pii(self.pending)] if self.config.redact_pii else []
        if self.config.neutralise_script_urls:
            spans += [m.span() for m in SCRIPT_URL_TEXT.finditer(self.pending)]
        for start, stop in spans:  # never cut through a match: hold it back whole
            if start < cut < stop:
                cut = start
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return self._safe(out)

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return "" if self.blocked else self._safe(out)


# ---------------------------------------------------------------- metrics and middleware


class GuardMetrics:
    """`llmops_guard_flags_total{direction,kind}` in the given registry (the app's own, so /metrics shows it)."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.registry = registry if registry is not None else CollectorRegistry()
        self.flags = Counter("llmops_guard_flags", "Requests (input) or responses (output) flagged by a guard",
                             ["direction", "kind"], registry=self.registry)
        self.scope_answers = Counter("llmops_scope_answers", "Chat requests whose answer may not open with the "
                                     "refusal (governance/scope.py)", registry=self.registry)

    def count(self, direction: str, kinds: list[str]) -> None:
        for kind in kinds:
            self.flags.labels(direction, kind).inc()


Send = Callable[[dict[str, Any]], Any]


class GuardMiddleware:
    """ASGI middleware: input guards before the app sees a completion request, output guards on its answer."""

    def __init__(self, app: Any, config: GuardConfig | None = None, registry: Any = None,
                 metrics: GuardMetrics | None = None) -> None:
        self.app, self.config = app, config or GuardConfig()
        self.metrics = metrics or GuardMetrics(registry)

    async def __call__(self, scope: dict, receive: Any, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope["path"] not in GUARDED_PATHS:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        try:
            request = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets
            request = None  # not JSON: the app answers 400 in its own words
        # A request the API would refuse anyway gets the app's 400, not a guard's answer.
        if isinstance(request, dict) and is_valid_request(scope["path"], request):
            from starlette.concurrency import run_in_threadpool

            # The detectors are CPU work (an embedding per text): off the event loop.
            chat = scope["path"] == "/v1/chat/completions"
            size_only = not chat and self.config.raw_completions == "size_only"

            def judged() -> tuple[InputVerdict, ScopeVerdict | None]:
                verdict = check_request(request_texts(request), self.config, size_only=size_only)
                scoped = in_scope(request, verdict) if chat and self.config.answer_in_scope and not verdict.blocked \
                    else None
                return verdict, scoped

            verdict, scoped = await run_in_threadpool(judged)
            flagged = list(dict.fromkeys(d.kind for d in verdict.detections))
            self.metrics.count("input", flagged)
            if verdict.blocked:
                await self._send_blocked(scope, send, request, verdict.blocked_by)
                return
            if scoped is not None and scoped.answer:
                # serving/app.py bans this text's first token as the answer's opening
                scope.setdefault("state", {})[BAN_OPENING] = self.config.refusal
                self.metrics.scope_answers.inc()
        await self.app(scope, replay, self._output_guard(send, self._system_prompt(scope)))

    def _system_prompt(self, scope: dict) -> str | None:
        """config.system_prompt, else the system messages of the serving app's prompt (serving/app.py)."""
        if self.config.system_prompt or not self.config.block_prompt_leak:
            return self.config.system_prompt
        serving = getattr(getattr(scope.get("app"), "state", None), "serving", None)
        prompt = getattr(serving, "prompt", None)
        messages = getattr(prompt, "messages", None) or []
        text = "\n".join(m.content for m in messages if getattr(m, "role", "") == "system")
        return text or None

    async def _send_blocked(self, scope: dict, send: Send, request: dict, kinds: list[str]) -> None:
        status, body = blocked_body(scope["path"], request, kinds, self.config)
        stream = status == 200 and bool(request.get("stream"))
        data = _sse_from(body) if stream else json.dumps(body).encode()
        media = b"text/event-stream" if stream else b"application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", media), (b"content-length", str(len(data)).encode()),
                                (GUARD_HEADER.encode(), f"input:{','.join(kinds)}".encode())]})
        await send({"type": "http.response.body", "body": data, "more_body": False})

    def _output_guard(self, send: Send, system_prompt: str | None = None) -> Send:
        config, metrics = self.config, self.metrics
        state: dict[str, Any] = {"mode": None, "start": None, "body": b"", "buf": b"", "guards": {}}

        def edit_choices(payload: dict[str, Any], stream: bool) -> list[str]:
            kinds: list[str] = []
            for choice in payload.get("choices") or []:
                if not isinstance(choice, dict):
                    continue
                holder, key = ((choice.get("delta") or {}), "content") if stream and "delta" in choice else (
                    (choice.get("message") or {}), "content") if "message" in choice else (choice, "text")
                text = holder.get(key)
                if stream:
                    guard = state["guards"].setdefault(choice.get("index", 0), StreamGuard(config, system_prompt))
                    safe = guard.feed(text) if isinstance(text, str) else ""
                    if choice.get("finish_reason") is not None:
                        safe += guard.flush()
                        if guard.blocked:
                            choice["finish_reason"] = "content_filter"
                    if isinstance(text, str) or safe:
                        holder[key] = safe
                        if "delta" in choice:
                            choice["delta"] = holder
                elif isinstance(text, str):
                    holder[key], found = guard_output(text, config, system_prompt)
                    if "prompt_leak" in found:
                        choice["finish_reason"] = "content_filter"
                    kinds += found
            return kinds

        def stream_kinds() -> list[str]:
            return sorted({k for g in state["guards"].values() for k in g.kinds})

        def flag_comment() -> bytes:
            kinds = stream_kinds()
            return f"{GUARD_COMMENT}output:{','.join(kinds)}\n\n".encode() if kinds else b""

        async def guarded_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                ctype = headers.get(b"content-type", b"").decode()
                ok = message["status"] == 200
                state["mode"] = ("json" if ok and ctype.startswith("application/json") else
                                 "sse" if ok and ctype.startswith("text/event-stream") else "pass")
                if state["mode"] != "json":
                    await send(message)
                else:
                    state["start"] = message  # sent with the rewritten body and its new length
                return
            if message["type"] != "http.response.body" or state["mode"] == "pass":
                await send(message)
                return
            more = message.get("more_body", False)
            if state["mode"] == "json":
                state["body"] += message.get("body", b"")
                if more:
                    return
                data, kinds = state["body"], []
                try:
                    payload = json.loads(data)
                    kinds = edit_choices(payload, stream=False)
                    if kinds:
                        data = json.dumps(payload).encode()
                except ValueError:
                    pass
                metrics.count("output", kinds)
                start = state["start"]
                headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(data)).encode()))
                if kinds:
                    headers.append((GUARD_HEADER.encode(), f"output:{','.join(kinds)}".encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": data, "more_body": False})
                return
            # SSE: rewrite whole events ("data: ...\n\n"); a partial event waits for its end.
            state["buf"] += message.get("body", b"")
            *events, state["buf"] = state["buf"].split(b"\n\n")
            out = []
            for event in events:
                line = event.decode("utf-8", "replace")
                if line.startswith("data:") and line[5:].strip() == "[DONE]":
                    out.append(flag_comment())
                elif line.startswith("data: "):
                    try:
                        payload = json.loads(line[6:])
                        edit_choices(payload, stream=True)
                        line = "data: " + json.dumps(payload, ensure_ascii=False)
                    except ValueError:
                        pass
                out.append(line.encode() + b"\n\n")
            if not more:
                out.append(state["buf"])
                metrics.count("output", stream_kinds())
            await send({"type": "http.response.body", "body": b"".join(out), "more_body": more})

        return guarded_send
