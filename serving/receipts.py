"""Response receipts: feedback can rate only an answer this server gave, with the text it gave.

Every chat completion carries `llmops_receipt` (an extension field: in the JSON body, or in the
streamed chunk that has the finish reason). It is a Fernet token (`cryptography`: AES-128-CBC
and HMAC-SHA256, with its issue time) holding the response id, the model, the question and the
answer as the model produced them. POST /v1/feedback takes the receipt instead of the texts, so a
thumbs-up row cannot carry words the model never said, and an unknown, altered or expired receipt
is refused (400). The token is encrypted, not only signed: the answer inside it is the model's
own text from before the output guards, and a redacted answer's original must not reach the
client.

The key is `LLMOPS_RECEIPT_KEY` (a Fernet key, e.g. from a Kubernetes Secret), else
`<home>/serving/receipt.key`, made on first use (mode 0600, folder 0700). The workers and the
gateway on one machine share the home, so the gateway's /v1/feedback accepts the workers'
receipts.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from llmops.errors import InputError
from llmops.settings import Settings

RECEIPT_FIELD = "llmops_receipt"
KEY_FILE = "serving/receipt.key"
MAX_AGE_S = 30 * 24 * 3600  # feedback on an answer older than 30 days is refused


def receipt_key(settings: Settings | None = None) -> bytes:
    """The Fernet key: the setting, else the home's key file (created 0600 on first use)."""
    settings = settings or Settings.load()
    configured = settings.secret("receipt_key")
    if configured:
        return configured.encode()
    path = settings.home / KEY_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".receipt-")  # mode 0600
        try:
            os.write(fd, Fernet.generate_key() + b"\n")
            os.fsync(fd)
            os.close(fd)
            # link(2) fails if the key exists: of two workers starting at once, one key wins
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_text().strip().encode()


class Receipts:
    """Issue and open receipts with one key."""

    def __init__(self, key: bytes, max_age_s: int = MAX_AGE_S) -> None:
        self.fernet, self.max_age_s = Fernet(key), max_age_s

    def issue(self, response_id: str, model: str, question: str, answer: str) -> str:
        body = {"id": response_id, "model": model, "question": question, "answer": answer}
        return self.fernet.encrypt(json.dumps(body, ensure_ascii=False).encode()).decode()

    def open(self, token: str) -> dict[str, Any]:
        """The receipt's fields; InputError (field `receipt`) when it is not one of ours or too old."""
        try:
            data = self.fernet.decrypt(token.encode(), ttl=self.max_age_s)
        except (InvalidToken, ValueError):
            raise InputError("unknown, altered or expired response receipt: send the `llmops_receipt` "
                             "of the answer being rated", field="receipt") from None
        return json.loads(data)


def default_receipts(settings: Settings | None = None) -> Receipts:
    return Receipts(receipt_key(settings))


def last_user_text(messages: list[Any]) -> str:
    """The question a chat request asks: its last user message, as the model sees it."""
    users = [m for m in messages if m.role == "user"]
    return users[-1].text() if users else ""
