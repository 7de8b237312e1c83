"""Feedback API (thumbs up/down on an answer) into an append-only JSONL store, and the chat page route.

    curl -s localhost:8000/v1/feedback -H "Authorization: Bearer $LLMOPS_API_KEY" \
        -H 'content-type: application/json' \
        -d '{"receipt": "<the answer's llmops_receipt>", "rating": "up", "colour": "blue"}'
    open http://localhost:8000/chat

Mounting (the lead wires this into serving/app.py's create_app / the gateway):

    app.include_router(feedback_router(FeedbackStore.default(), KeyStore(key_file())))
    app.include_router(chat_router())

POST /v1/feedback needs an API key (Bearer) whose role holds the `feedback` permission in
governance/policy.yaml (401 without a valid key, 403 without the permission). The body is capped
field by field (FeedbackIn). The answer is named by its receipt (serving/receipts.py), which the
server issued with the completion: the question, the answer and the model come from it, never from
the client, and an unknown, altered or expired receipt gets a 404. One rating per answer: a
second rating of the same receipt gets a 409 (code already_rated) and the first stays, across
restarts and workers (FeedbackStore.append_once checks the file under its lock). One entry is one line of
`<home>/feedback/feedback.jsonl` (mode 0600: it holds user text), appended under an fcntl lock with
a single write, so concurrent workers never interleave lines; entries are never rewritten. An entry
carries who sent it (key id and name), when, the rating, the response id, prompt, response, model
and colour.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from governance.apikeys import AuthenticationError, Principal
from governance.policy import load_policy
from llmops.errors import InputError
from llmops.settings import Settings
from serving.ratelimit import error_json
from serving.receipts import Receipts, default_receipts
from serving.schemas import ErrorResponse

FEEDBACK_FILE = "feedback/feedback.jsonl"
CHAT_DIR = Path(__file__).with_name("chat")
# Files of the chat page: name -> media type. Nothing else under serving/chat/ is served.
CHAT_FILES = {"chat.js": "text/javascript; charset=utf-8", "chat.css": "text/css; charset=utf-8"}
# The page loads only its own script and style and talks only to its own origin.
CHAT_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

# A receipt holds the question (at most the serving prompt cap, 16,000 characters) and the answer,
# encrypted and base64-encoded: about 4/3 of their UTF-8 bytes.
MAX_RECEIPT = 200_000
MAX_COMMENT = 2_000


class FeedbackIn(BaseModel):
    """The body of POST /v1/feedback. Unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")

    receipt: StrictStr = Field(min_length=100, max_length=MAX_RECEIPT, pattern=r"^gAAAAA[A-Za-z0-9_=-]+$")
    """The `llmops_receipt` of the answer being rated, as the completion carried it."""
    rating: Literal["up", "down"]
    """Thumbs up or down."""
    colour: Literal["blue", "green"] | None = None
    """The gateway colour that answered (x-llmops-colour); None when served without a gateway."""
    comment: StrictStr | None = Field(default=None, max_length=MAX_COMMENT)
    """Optional free text (what was wrong, a better answer)."""


# What /v1/feedback answers besides 201, in the serving apps' OpenAI error shape.
FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description} for status, description in (
        (400, "A malformed body"), (401, "No valid API key"), (403, "The key's role may not send feedback"),
        (404, "The receipt names no answer this server gave (unknown, altered or expired)"),
        (409, "This answer was rated already (code already_rated): one rating per receipt, the first stays"),
        (413, "Body over the size cap"), (429, "Over the per-client rate limit"))}


class FeedbackOut(BaseModel):
    id: str
    stored: bool = True


class FeedbackStore:
    """Append-only JSONL. `append` writes one line under an exclusive lock; `read` yields entries."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: tuple[int, int] | None = None  # (inode, device) of the file append_once has read
        self._offset = 0  # how far it has read
        self._seen: set[str] = set()  # the keys of the entries up to there
        self._torn = False  # the file ends inside a line (a write cut short by a crash)

    @classmethod
    def default(cls) -> FeedbackStore:
        return cls(Settings.load().home / FEEDBACK_FILE)

    def append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._write(fd, line)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def append_once(self, entry: dict[str, Any], key: str = "response_id") -> bool:
        """Append `entry` unless an entry with the same `key` is stored already, by this process or
        any other: False then, and nothing is written. The check and the write happen under one
        exclusive lock on the file, so two workers cannot both store a rating of the same answer; the
        keys read so far are kept with the file's size and inode, so each call reads only the lines
        appended since (by anyone), and a restarted worker reads the file once."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                stat = os.fstat(fd)
                if (stat.st_ino, stat.st_dev) != self._file or stat.st_size < self._offset:  # new or replaced
                    self._file, self._offset, self._seen, self._torn = (stat.st_ino, stat.st_dev), 0, set(), False
                self._read_keys(fd, stat.st_size, key)
                if str(entry[key]) in self._seen:
                    return False
                line = (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
                if self._torn:  # end the torn line first, so that this entry is a line of its own
                    line = b"\n" + line
                self._write(fd, line)
                self._offset, self._torn = self._offset + len(line), False
                self._seen.add(str(entry[key]))
                return True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _read_keys(self, fd: int, size: int, key: str) -> None:
        """Add the `key` of each entry between the offset read so far and `size`, 4 MB at a time."""
        rest = b""
        while self._offset < size:
            chunk = os.pread(fd, min(1 << 22, size - self._offset), self._offset)
            if not chunk:
                break
            self._offset += len(chunk)
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                try:
                    stored = json.loads(line)
                except ValueError:  # a torn line (a crash mid-write): not an entry
                    continue
                if isinstance(stored, dict) and stored.get(key) is not None:
                    self._seen.add(str(stored[key]))
            self._torn = bool(rest)  # the file ends inside a line

    def _write(self, fd: int, line: bytes) -> None:
        written = os.write(fd, line)
        if written != len(line):  # a regular file takes the whole line or fails
            raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
        os.fsync(fd)

    def read(self) -> Iterator[dict[str, Any]]:
        """Every entry, oldest first; a torn last line (a crash mid-write) is skipped."""
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    yield entry


def feedback_router(store: FeedbackStore, keystore: Any, policy: Any = None,
                    receipts: Receipts | None = None) -> APIRouter:
    """POST /v1/feedback, guarded by an API key with the `feedback` permission."""
    policy = policy or load_policy()
    receipts = receipts or default_receipts()
    router = APIRouter(tags=["feedback"])

    def principal(authorization: Annotated[str | None, Header()] = None) -> Principal:
        token = (authorization or "").removeprefix("Bearer ").strip() if authorization else None
        try:
            who = keystore.authenticate(token)
        except AuthenticationError as exc:
            raise HTTPException(401, "a valid API key is required (Authorization: Bearer ...)",
                                headers={"WWW-Authenticate": "Bearer"}) from exc
        if not policy.allows(who.role, "feedback"):
            raise HTTPException(403, f"role {who.role!r} may not send feedback")
        return who

    @router.post("/v1/feedback", response_model=FeedbackOut, status_code=201, responses=FEEDBACK_ERRORS)
    # a default, not Annotated[..., Depends(principal)]: `principal` is local, and postponed
    # annotations are resolved in the module's globals
    def post_feedback(body: FeedbackIn, who: Principal = Depends(principal)) -> Any:  # noqa: B008
        try:
            said = receipts.open(body.receipt)
        except InputError as exc:  # well-formed, but names no answer this server gave
            raise HTTPException(404, str(exc)) from None
        entry_id = uuid.uuid4().hex
        entry = {"id": entry_id, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                 "key_id": who.key_id, "actor": who.name, "response_id": said["id"],
                 "prompt": said["question"], "response": said["answer"], "model": said["model"],
                 "rating": body.rating, "colour": body.colour, "comment": body.comment}
        if not store.append_once(entry, key="response_id"):  # one rating per answer; the first stays
            return error_json(409, f"answer {said['id']} was rated already: a receipt takes one rating",
                              "invalid_request_error", "receipt", "already_rated")
        return FeedbackOut(id=entry_id)

    return router


def chat_router() -> APIRouter:
    """GET /chat (the page) and GET /chat/{chat.js,chat.css}; static files, no build step."""
    router = APIRouter(tags=["chat"])
    headers = {"Content-Security-Policy": CHAT_CSP, "X-Content-Type-Options": "nosniff",
               "Cache-Control": "no-cache"}

    @router.get("/chat", include_in_schema=False)
    def chat_page() -> FileResponse:
        return FileResponse(CHAT_DIR / "index.html", media_type="text/html; charset=utf-8", headers=headers)

    @router.get("/chat/{name}", include_in_schema=False)
    def chat_asset(name: str) -> FileResponse:
        if name not in CHAT_FILES:
            raise HTTPException(404, "not found")
        return FileResponse(CHAT_DIR / name, media_type=CHAT_FILES[name], headers=headers)

    return router
