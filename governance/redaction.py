"""Redaction of secrets: API keys and bearer tokens in text, secret-named fields and headers in
mappings, and a logging filter that masks them in every record. The audit log scrubs each entry
with it; servers install the filter on their loggers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

# llm_ + 12 hex + _ + token_urlsafe(32) (43 chars of [A-Za-z0-9_-]); >= 20 so a truncated key in a
# log line is still masked.
KEY_PATTERN = re.compile(r"llm_([0-9a-f]{12})_[A-Za-z0-9_-]{20,}")
_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[^\s,;\"']+", re.IGNORECASE)
MASK = "***"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie",
                            "set-cookie", "x-auth-token"})
# Field names whose values are secret, compared with '_' and '-' removed and lower-cased. "token"
# is matched exactly or as *_token names, not as a suffix, so max_tokens and num_tokens survive.
_SECRET_NAMES = frozenset({"apikey", "xapikey", "secret", "clientsecret", "password", "passwd",
                           "authorization", "cookie", "credential", "credentials", "token",
                           "accesstoken", "refreshtoken", "authtoken", "hftoken", "githubtoken",
                           "bearertoken", "sessiontoken", "idtoken", "privatekey"})


def redact(text: str) -> str:
    """Mask our keys (keeping the key_id, which is not secret) and Bearer/Basic credentials."""
    text = KEY_PATTERN.sub(lambda m: f"llm_{m.group(1)}_{MASK}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)


def is_secret_field(name: str) -> bool:
    norm = re.sub(r"[-_\s]", "", str(name)).lower()
    return norm in _SECRET_NAMES or norm.endswith(("apikey", "password", "secret", "privatekey"))


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of request headers fit to log: credential headers masked whole, others scanned."""
    return {k: MASK if k.lower() in SECRET_HEADERS else redact(str(v)) for k, v in headers.items()}


def scrub(value: Any) -> Any:
    """A copy of `value` (dicts, lists, strings) with secret-named fields and key-shaped text masked."""
    if isinstance(value, Mapping):
        return {k: MASK if is_secret_field(k) and v not in (None, "") else scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


class RedactingFilter(logging.Filter):
    """Rewrites every record's message through redact(). Attach it to handlers (install_log_redaction):
    a filter on a logger does not see records that propagate up from child loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Add one RedactingFilter to `logger` (root by default) and each of its handlers."""
    logger = logger or logging.getLogger()
    filt = RedactingFilter()
    logger.addFilter(filt)
    for handler in logger.handlers:
        handler.addFilter(filt)
    return filt
