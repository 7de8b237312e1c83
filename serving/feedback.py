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
the client, and an unknown, altered or expired receipt gets a 400. One entry is one line of
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
from serving.receipts import Receipts, default_receipts

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


# What /v1/feedback answers besides 201 (a body error is a 400 in the serving apps' OpenAI shape).
FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A malformed body"}, 401: {"description": "No valid API key"},
    403: {"description": "The key's role may not send feedback"},
    404: {"description": "The receipt names no answer this server gave (unknown, altered or expired)"},
    413: {"description": "Body over the size cap"}, 429: {"description": "Over the per-client rate limit"}}


class FeedbackOut(BaseModel):
    id: str
    stored: bool = True


class FeedbackStore:
    """Append-only JSONL. `append` writes one line under an exclusive lock; `read` yields entries."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

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
                written = os.write(fd, line)
                if written != len(line):  # a regular file takes the whole line or fails
                    raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

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
    def post_feedback(body: FeedbackIn, who: Principal = Depends(principal)) -> FeedbackOut:  # noqa: B008
        try:
            said = receipts.open(body.receipt)
        except InputError as exc:  # well-formed, but names no answer this server gave
            raise HTTPException(404, str(exc)) from None
        entry_id = uuid.uuid4().hex
        store.append({"id": entry_id, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                      "key_id": who.key_id, "actor": who.name, "response_id": said["id"],
                      "prompt": said["question"], "response": said["answer"], "model": said["model"],
                      "rating": body.rating, "colour": body.colour, "comment": body.comment})
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
