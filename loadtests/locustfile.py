"""Load profile of the OpenAI-compatible server: non-streaming and streaming chat completions.

    .venv/bin/locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --headless -u 4 -r 4 -t 20s

`llmops loadtest` runs this file in its own locust process and gates the numbers against
loadtests/slo.yaml; plain `locust -f` works too (web UI without --headless). The file imports
only locust and the standard library, because locust's gevent monkey-patching must come first.

Environment (all optional):
  LOADTEST_EVAL_SET      JSONL with a `question` per line (default: datasets/python-faq/eval.jsonl
                         of this repository). When the default is missing, built-in questions are
                         used and a warning says so; a missing or malformed file named here is an error.
  LOADTEST_MAX_TOKENS    max_tokens of every request (default 16).
  LOADTEST_CHAT_WEIGHT   task weight of non-streaming chat completions (default 1).
  LOADTEST_STREAM_WEIGHT task weight of streaming chat completions (default 1).
  LOADTEST_THINK_TIME_S  each user waits uniform(0, this) seconds between requests (default 0.1).
  LOADTEST_API_KEY       sent as `Authorization: Bearer <key>`.
  LOADTEST_MODEL         the request's `model` field (default "llmops").
  LOADTEST_SAMPLES       append one JSON line per request here (exact percentiles for the gate).

Custom metrics, fired as locust request events so they land in the stats CSV beside the requests:
  request_type "TTFT": time to first token in ms (request start -> first SSE chunk whose
                       delta.content is non-empty; includes queueing and prefill).
  request_type "TPS":  output rate of one stream in tokens/s, carried in the response_time column:
                       completion_tokens / (t_end - request start). completion_tokens comes from
                       `usage` when the server sends it (we ask with stream_options.include_usage),
                       else it is the number of content chunks; t_end is the arrival of the chunk
                       with finish_reason (else of [DONE]).
  Why not the pure decode rate (tokens - 1) / (t_end - t_first)? When the client falls behind on a
  busy box, several chunks arrive in one read and t_end - t_first shrinks towards 0: the rate
  blows up (we saw 160,000 tokens/s), which would pass a minimum-rate gate falsely. The rate over
  the whole request can only err low. The decode rate is still written to the samples file
  (`decode_tokens_per_s`) for reading, not gating.
A non-2xx status, a body that is not what OpenAI's API sends, an in-band `error` event, a
malformed SSE line or a stream that ends without `data: [DONE]` count as failures.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, constant, events

CHAT_PATH = "/v1/chat/completions"
CHAT_NAME = CHAT_PATH
STREAM_NAME = CHAT_PATH + " (stream)"
DEFAULT_EVAL_SET = Path(__file__).resolve().parents[1] / "datasets" / "python-faq" / "eval.jsonl"
# Used only when the default eval set is absent (e.g. the locustfile copied out of the repo).
FALLBACK_QUESTIONS = (
    "What is a lambda?",
    "How do I make a Python script executable on Unix?",
    "How do I copy a file?",
    "Why are default values shared between objects?",
)


def _fail_setup(message: str) -> None:
    # Raised at import, so locust stops before any user starts; exit code 1 with this one line.
    raise SystemExit(f"loadtests/locustfile.py: {message}")


def _env_number(name: str, default: float, *, integer: bool, minimum: float) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        kind = "an integer" if integer else "a number"
        _fail_setup(f"{name} must be {kind} >= {minimum:g}, got {raw!r}")
    return value


def load_questions(path_env: str | None) -> tuple[list[str], str]:
    """(questions, where they came from). Exits with a message naming the file and line on bad input."""
    path = Path(path_env) if path_env else DEFAULT_EVAL_SET
    if not path.is_file():
        if path_env:
            _fail_setup(f"LOADTEST_EVAL_SET={path_env}: no such file")
        print(f"loadtests/locustfile.py: warning: {path} not found; using {len(FALLBACK_QUESTIONS)} "
              "built-in questions (set LOADTEST_EVAL_SET)", file=sys.stderr)
        return list(FALLBACK_QUESTIONS), "built-in"
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            _fail_setup(f"{path}:{number}: invalid JSON ({exc.msg})")
        question = row.get("question") if isinstance(row, dict) else None
        if not isinstance(question, str) or not question.strip():
            _fail_setup(f"{path}:{number} [question]: missing or empty")
        questions.append(question)
    if not questions:
        _fail_setup(f"{path}: no rows")
    return questions, str(path)


QUESTIONS, QUESTIONS_SOURCE = load_questions(os.environ.get("LOADTEST_EVAL_SET", "").strip() or None)
MAX_TOKENS = _env_number("LOADTEST_MAX_TOKENS", 16, integer=True, minimum=1)
CHAT_WEIGHT = _env_number("LOADTEST_CHAT_WEIGHT", 1, integer=True, minimum=0)
STREAM_WEIGHT = _env_number("LOADTEST_STREAM_WEIGHT", 1, integer=True, minimum=0)
THINK_TIME_S = _env_number("LOADTEST_THINK_TIME_S", 0.1, integer=False, minimum=0)
MODEL = os.environ.get("LOADTEST_MODEL", "llmops")
API_KEY = os.environ.get("LOADTEST_API_KEY", "")
if CHAT_WEIGHT + STREAM_WEIGHT == 0:
    _fail_setup("LOADTEST_CHAT_WEIGHT and LOADTEST_STREAM_WEIGHT are both 0: no task would run")

_samples_path = os.environ.get("LOADTEST_SAMPLES", "").strip()
# Line-buffered: each sample is one write of one line, and greenlets only switch on I/O waits of
# the sockets, so lines from concurrent users never interleave.
_samples = open(_samples_path, "a", encoding="utf-8", buffering=1) if _samples_path else None  # noqa: SIM115


@events.quitting.add_listener
def _close_samples(**_: Any) -> None:
    if _samples is not None:
        _samples.close()


_environment: Any = None


@events.init.add_listener
def _keep_environment(environment: Any, **_: Any) -> None:
    global _environment
    _environment = environment
    logging.getLogger(__name__).info("%d questions from %s; max_tokens=%d, weights chat:stream=%d:%d",
                                     len(QUESTIONS), QUESTIONS_SOURCE, MAX_TOKENS, CHAT_WEIGHT, STREAM_WEIGHT)


@events.quit.add_listener
def _write_final_csv(**_: Any) -> None:
    """Rewrite --csv's stats and failures files with the final numbers.

    Locust rewrites them once a second while running and not at exit, so they would miss up to the
    last second of the run. `quit` fires after the users stopped, just before locust closes its
    handles: we write beside them and rename over, so its last flush goes to the replaced inode.
    """
    environment = _environment
    options = getattr(environment, "parsed_options", None)
    prefix = getattr(options, "csv_prefix", None)
    if not prefix:
        return
    import csv

    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (("_stats.csv", writer.requests_csv), ("_failures.csv", writer.failures_csv)):
        target = f"{prefix}{suffix}"
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            write(csv.writer(handle))
        os.replace(tmp, target)


def record(task: str, *, ok: bool, start: float, latency_ms: float, status: int, error: str | None = None,
           ttft_ms: float | None = None, completion_tokens: int | None = None,
           tokens_per_s: float | None = None, decode_tokens_per_s: float | None = None) -> None:
    if _samples is None or _samples.closed:
        return
    _samples.write(json.dumps({
        "task": task, "ok": ok, "start": round(start, 6), "latency_ms": round(latency_ms, 3), "status": status,
        "ttft_ms": None if ttft_ms is None else round(ttft_ms, 3), "completion_tokens": completion_tokens,
        "tokens_per_s": None if tokens_per_s is None else round(tokens_per_s, 3),
        "decode_tokens_per_s": None if decode_tokens_per_s is None else round(decode_tokens_per_s, 3),
        "error": error,
    }) + "\n")


class StreamError(Exception):
    """The SSE stream broke the OpenAI protocol (malformed line, in-band error, no [DONE])."""


def _http_error(resp: Any) -> str | None:
    if resp.status_code == 0:  # connection error: locust's ErrorResponse has no status
        return f"connection error: {getattr(resp, 'error', None)!r}"
    if not 200 <= resp.status_code < 300:
        body = ""
        with contextlib.suppress(Exception):  # the body only decorates the message
            body = (resp.text or "")[:200]
        return f"HTTP {resp.status_code}: {body}"
    return None


class ChatUser(FastHttpUser):
    """One load-test user: asks eval-set questions, with or without streaming."""

    wait_time = between(0, THINK_TIME_S) if THINK_TIME_S > 0 else constant(0)
    # The server queues generations; a stuck request must fail, not hold a user for locust's 60 s default.
    network_timeout = 30.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        self.headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}

    def _body(self, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": stream,
                                "messages": [{"role": "user", "content": random.choice(QUESTIONS)}]}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def chat(self) -> None:
        start, t0 = time.time(), time.perf_counter()
        with self.client.post(CHAT_PATH, json=self._body(False), headers=self.headers, name=CHAT_NAME,
                              catch_response=True) as resp:
            latency_ms = (time.perf_counter() - t0) * 1000
            error, tokens = _http_error(resp), None
            if error is None:
                try:
                    data = resp.json()
                    content = data["choices"][0]["message"]["content"]
                    if not isinstance(content, str):
                        raise TypeError("choices[0].message.content is not a string")
                    tokens = int(data["usage"]["completion_tokens"]) if data.get("usage") else None
                except Exception as exc:  # noqa: BLE001 - any shape error is the failure we report
                    error = f"malformed chat completion: {exc!r}"
            if error:
                resp.failure(error)
            else:
                resp.success()
            record("chat", ok=error is None, start=start, latency_ms=latency_ms, status=resp.status_code,
                   error=error, completion_tokens=tokens)

    def stream(self) -> None:
        start, t0 = time.time(), time.perf_counter()
        with self.client.post(CHAT_PATH, json=self._body(True), headers=self.headers, name=STREAM_NAME,
                              catch_response=True, stream=True) as resp:
            error = _http_error(resp)
            t_first = t_end = None
            chunks, usage_tokens, size = 0, None, 0
            if error is None:
                try:
                    ctype = (resp.headers or {}).get("content-type", "")
                    if "text/event-stream" not in ctype:
                        raise StreamError(f"content-type is {ctype!r}, not text/event-stream")
                    t_first, t_end, chunks, usage_tokens, size = self._read_sse(resp, t0)
                except Exception as exc:  # noqa: BLE001 - a broken stream is a failed request
                    error = f"{type(exc).__name__}: {exc}"
            now = time.perf_counter()
            latency_ms = (now - t0) * 1000
            # Locust timed only the headers for stream=True; report the whole stream instead.
            resp.request_meta["response_time"] = latency_ms
            resp.request_meta["response_length"] = size
            if error:
                resp.failure(error)
                record("stream", ok=False, start=start, latency_ms=latency_ms, status=resp.status_code, error=error)
                return
            resp.success()
        ttft_ms = tps = None
        tokens = usage_tokens if usage_tokens is not None else chunks
        fire = self.environment.events.request.fire
        if t_first is not None:
            ttft_ms = (t_first - t0) * 1000
            fire(request_type="TTFT", name=STREAM_NAME, response_time=ttft_ms, response_length=0,
                 exception=None, context={})
        if tokens >= 1 and t_end is not None and t_end > t0:
            tps = tokens / (t_end - t0)
            fire(request_type="TPS", name=STREAM_NAME, response_time=tps, response_length=tokens,
                 exception=None, context={})
        decode = None
        if t_first is not None and t_end is not None and tokens >= 2 and t_end > t_first:
            decode = (tokens - 1) / (t_end - t_first)
        record("stream", ok=True, start=start, latency_ms=latency_ms, status=resp.status_code, ttft_ms=ttft_ms,
               completion_tokens=tokens, tokens_per_s=tps, decode_tokens_per_s=decode)

    @staticmethod
    def _read_sse(resp: Any, t0: float) -> tuple[float | None, float | None, int, int | None, int]:
        """Read the stream line by line as it arrives: (t_first_token, t_end, content chunks, usage tokens, bytes).

        geventhttpclient's readline returns as soon as one line is buffered; read(n) would wait for
        n bytes and hide the first token's arrival.
        """
        raw = resp._response
        t_first = t_end = None
        chunks, usage_tokens, size, done = 0, None, 0, False
        while True:
            line = raw.readline(b"\n")
            if not line:
                break
            size += len(line)
            text = line.decode("utf-8").rstrip("\r\n")
            if not text or text.startswith(":") or text.startswith(("event:", "id:", "retry:")):
                continue  # event separator, comment or non-data field
            if not text.startswith("data:"):
                raise StreamError(f"not an SSE field: {text[:80]!r}")
            payload = text[5:].strip()
            if payload == "[DONE]":
                done = True
                t_end = t_end or time.perf_counter()
                continue
            if done:
                raise StreamError("data after [DONE]")
            try:
                event = json.loads(payload)
            except json.JSONDecodeError as exc:
                raise StreamError(f"chunk is not JSON ({exc.msg}): {payload[:80]!r}") from None
            if not isinstance(event, dict):
                raise StreamError(f"chunk is not an object: {payload[:80]!r}")
            if "error" in event:
                raise StreamError(f"in-band error: {event['error']}")
            if event.get("usage"):
                usage_tokens = int(event["usage"]["completion_tokens"])
            choices = event.get("choices")
            if not isinstance(choices, list):
                raise StreamError(f"chunk without a choices list: {payload[:80]!r}")
            for choice in choices:
                delta = choice.get("delta")
                if not isinstance(delta, dict):
                    raise StreamError(f"choice without a delta: {payload[:80]!r}")
                if delta.get("content"):
                    chunks += 1
                    if t_first is None:
                        t_first = time.perf_counter()
                if choice.get("finish_reason"):
                    t_end = time.perf_counter()
        if not done:
            raise StreamError("the stream ended without data: [DONE]")
        return t_first, t_end, chunks, usage_tokens, size

    tasks = {chat: CHAT_WEIGHT, stream: STREAM_WEIGHT}
