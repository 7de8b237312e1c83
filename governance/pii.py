"""PII and secret detectors shared by the data gate, the no-pii eval assertion and the serving guards.

    .venv/bin/python -c "from governance.pii import find_pii; print(find_pii('mail jane.doe@gmail.com'))"

Kinds reported (`PiiMatch.kind`): email, phone, credit_card, iban, api_key, private_key, ip_address.

Each detector pairs a regex with a validator, so that Python-documentation text does not light up:
- credit cards must pass the Luhn check; an unbroken digit run must also start with a card
  network's prefix (long integers in code are common, card numbers written without separators are not);
- IBANs must have their country's length (when known) and pass the ISO 13616 mod-97 check;
- phone numbers need a leading `+` (international) or the US 3-3-4 shape with separators, so that
  versions (3.11.2), dates (2023-01-15) and plain integers are not phones;
- IPv4 octets must be 0-255 without leading zeros; IPv6 must parse and have at least three groups
  (so slices like `x[1::2]` are not addresses);
- generic `key=...` and Bearer tokens must look random (mixed letters and digits, Shannon entropy
  of at least 3 bits a character), so that `password = getpass.getpass()` is not a secret.

Reserved values: loopback (127.0.0.0/8, ::1), unspecified (0.0.0.0, ::), the documentation ranges
(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) and the reserved example mail domains
(example.com/.net/.org, *.example, *.test, *.invalid, *.localhost) identify nobody. By default they are
still reported, because a guard or an eval should treat a model that writes `jane@example.com` like
one that writes any address. `allow_reserved=True` skips them: the data gate uses it, because
documentation corpora such as the Python FAQ use these values in their examples on purpose.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PiiMatch:
    kind: str
    start: int
    end: int
    text: str


KINDS = ("private_key", "api_key", "email", "iban", "credit_card", "ip_address", "phone")

# --- email -------------------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)
_RESERVED_MAIL_DOMAINS = ("example.com", "example.net", "example.org")
_RESERVED_MAIL_TLDS = ("example", "test", "invalid", "localhost")


_URL = re.compile(r"\b(?:https?|ftp|news)://[^\s<>\"']+")
# Inside a URL an "@" is usually user-info, a path or a Usenet message id (groups.google ...?selm=
# 34A04430.CF9@ohioee.com); it is an address only after a parameter that names one (?email=...).
_MAIL_PARAMETER = re.compile(r"(?i)(?:e-?mail|mailto|to|from|user)[=:]$")


def _email_outside_url(m: re.Match[str]) -> bool:
    text, start = m.string, m.start()
    for url in _URL.finditer(text, max(0, start - 2000), min(len(text), m.end() + 2000)):
        if url.start() <= start < url.end():
            return bool(_MAIL_PARAMETER.search(text[url.start():start]))
    return True


def _reserved_email(text: str) -> bool:
    domain = text.rsplit("@", 1)[1].lower()
    if domain.rsplit(".", 1)[-1] in _RESERVED_MAIL_TLDS:
        return True
    return any(domain == d or domain.endswith("." + d) for d in _RESERVED_MAIL_DOMAINS)


# --- phone -------------------------------------------------------------------------------------------
# International: +CC then 6-14 more digits in groups separated by space, dot, dash or (area) parens.
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?![\w])")
# US/NANP: (555) 234-5678, 555-234-5678, 555.234.5678, +1 555 234 5678; area and exchange start 2-9.
_PHONE_US = re.compile(
    r"(?<![\w.+-])(?:\+?1[ .-]?)?(?:\([2-9]\d{2}\)[ ]?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}(?![\w]|[.-]\d)"
)


def _valid_intl_phone(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    return 8 <= digits <= 15  # E.164 allows at most 15 digits; fewer than 8 is not a dialable number


# --- credit card -------------------------------------------------------------------------------------
# 13-19 digits, optionally split by single spaces or dashes (4-4-4-4, 4-6-5 for Amex, ...).
_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w]|[.-]\d)")
# Issuer prefixes (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro) for unbroken runs.
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[0689]|6(?:011|5|4[4-9]|2)|5[06-9]|35)")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum over a string of digits (every second digit from the right doubled)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _valid_card(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:  # 0000... passes Luhn but is filler
        return False
    if digits == text and not _CARD_PREFIX.match(digits):
        return False
    return luhn_valid(digits)


# --- IBAN --------------------------------------------------------------------------------------------
_IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![\w])")
# Lengths from the SWIFT IBAN registry; countries not listed only need 15-34 characters and mod-97.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_valid(text: str) -> bool:
    """Country length and ISO 13616 mod-97: move the first 4 characters to the end, letters to 10..35."""
    iban = text.replace(" ", "")
    expected = _IBAN_LENGTHS.get(iban[:2])
    if (expected is not None and len(iban) != expected) or not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


# --- API keys, tokens, private keys -------------------------------------------------------------------
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_VENDOR_KEYS = [
    re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}(?![A-Za-z0-9])"),  # AWS key ids
    re.compile(r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])"),  # GitHub tokens
    re.compile(r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,255}"),  # GitHub fine-grained PAT
    re.compile(r"(?<![A-Za-z0-9_-])xox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"(?<![A-Za-z0-9_])glpat-[A-Za-z0-9_-]{20,}"),  # GitLab PAT
    re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}(?![A-Za-z0-9])"),  # Hugging Face tokens
]
# OpenAI-style: sk-, sk-proj-, sk-svcacct-, sk-admin- then a long random tail (checked for randomness).
_SK_KEY = re.compile(r"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}")
_BEARER = re.compile(r"\bBearer\s+([A-Za-z0-9._~+/-]{20,}=*)")
_ASSIGNED_SECRET = re.compile(
    r"(?i)\b(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?key(?:[_-]?id)?|auth[_-]?token|"
    r"access[_-]?token|token|password|passwd|client[_-]?secret)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9._~+/=-]{16,})"
)


def shannon_entropy(text: str) -> float:
    """Bits per character of `text`'s own character distribution."""
    counts = {c: text.count(c) for c in set(text)}
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _looks_random(token: str) -> bool:
    return (any(c.isdigit() for c in token) and any(c.isalpha() for c in token)
            and shannon_entropy(token) >= 3.0)


# --- IP addresses ------------------------------------------------------------------------------------
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"
)
_DOC_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                                 "2001:db8::/32")]


def _valid_ipv4(text: str) -> bool:
    octets = text.split(".")
    return all(o == "0" or (not o.startswith("0") and int(o) <= 255) for o in octets)


def _valid_ipv6(text: str) -> bool:
    groups = [g for g in text.split(":") if g]
    if len(groups) < 3:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _reserved_ip(text: str) -> bool:
    addr = ipaddress.ip_address(text)
    return addr.is_loopback or addr.is_unspecified or any(addr in net for net in _DOC_NETS)


# --- assembly ----------------------------------------------------------------------------------------
Detector = tuple[str, re.Pattern[str], Callable[[re.Match[str]], bool], Callable[[str], bool] | None]


def _always(_: re.Match[str]) -> bool:
    return True


# (kind, pattern, validator, is_reserved). Listed in priority order: where two matches overlap, the
# earlier kind wins (a GitHub token is not also reported as a phone number).
_DETECTORS: list[Detector] = [
    ("private_key", _PRIVATE_KEY, _always, None),
    *[("api_key", p, _always, None) for p in _VENDOR_KEYS],
    ("api_key", _SK_KEY, lambda m: _looks_random(m.group(0)[3:]), None),
    ("api_key", _BEARER, lambda m: _looks_random(m.group(1)), None),
    ("api_key", _ASSIGNED_SECRET, lambda m: _looks_random(m.group(1)), None),
    ("email", _EMAIL, _email_outside_url, _reserved_email),
    ("iban", _IBAN, lambda m: iban_valid(m.group(0)), None),
    ("credit_card", _CARD, lambda m: _valid_card(m.group(0)), None),
    ("ip_address", _IPV4, lambda m: _valid_ipv4(m.group(0)), _reserved_ip),
    ("ip_address", _IPV6, lambda m: _valid_ipv6(m.group(0)), _reserved_ip),
    ("phone", _PHONE_INTL, lambda m: _valid_intl_phone(m.group(0)), None),
    ("phone", _PHONE_US, _always, None),
]


def find_pii(text: str, *, allow_reserved: bool = False) -> list[PiiMatch]:
    """Every PII or secret match in `text`, sorted by position, overlaps resolved by kind priority.

    For Bearer and `key=value` secrets the match covers only the token, not the label.
    """
    taken: list[PiiMatch] = []
    for kind, pattern, validate, is_reserved in _DETECTORS:
        for m in pattern.finditer(text):
            if not validate(m):
                continue
            group = 1 if pattern.groups else 0
            start, end = m.span(group)
            value = text[start:end]
            if allow_reserved and is_reserved is not None and is_reserved(value):
                continue
            if any(start < t.end and t.start < end for t in taken):
                continue
            taken.append(PiiMatch(kind=kind, start=start, end=end, text=value))
    return sorted(taken, key=lambda p: (p.start, p.end))


def redact(text: str, *, allow_reserved: bool = False) -> str:
    """`text` with each match replaced by `[KIND]`, e.g. `mail [EMAIL]`."""
    out, last = [], 0
    for match in find_pii(text, allow_reserved=allow_reserved):
        out += [text[last:match.start], f"[{match.kind.upper()}]"]
        last = match.end
    out.append(text[last:])
    return "".join(out)


def mask(value: str) -> str:
    """A preview of a match that does not leak it into reports or PR comments: `ja…(20 chars)`."""
    return f"{value[:2]}…({len(value)} chars)"
