"""PII detectors: each kind found, its look-alikes not.

    .venv/bin/pytest tests/governance/test_pii.py -q
"""

from __future__ import annotations

import json

import pytest

from governance.pii import PiiMatch, find_pii, iban_valid, luhn_valid, redact


def kinds(text: str, **kwargs) -> list[str]:
    return [m.kind for m in find_pii(text, **kwargs)]


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("write to jane.doe+faq@gmail.com today", "email", "jane.doe+faq@gmail.com"),
    ("call +44 20 7946 0958 now", "phone", "+44 20 7946 0958"),
    ("call +1-415-555-2671", "phone", "+1-415-555-2671"),
    ("call (415) 555-2671", "phone", "(415) 555-2671"),
    ("call 415.555.2671.", "phone", "415.555.2671"),
    ("card 4111 1111 1111 1111 expires", "credit_card", "4111 1111 1111 1111"),
    ("card 4111-1111-1111-1111", "credit_card", "4111-1111-1111-1111"),
    ("amex 378282246310005", "credit_card", "378282246310005"),
    ("pay GB82 WEST 1234 5698 7654 32 now", "iban", "GB82 WEST 1234 5698 7654 32"),
    ("pay DE89370400440532013000", "iban", "DE89370400440532013000"),
    ("key AKIAIOSFODNN7EXAMPLE", "api_key", "AKIAIOSFODNN7EXAMPLE"),
    ("token ghp_" + "a1B2c3D4e5" * 4, "api_key", "ghp_" + "a1B2c3D4e5" * 4),
    ("pat github_pat_11ABCDEFG0123456789_abcdefghijKLMNOP", "api_key",
     "github_pat_11ABCDEFG0123456789_abcdefghijKLMNOP"),
    ("OPENAI_API_KEY sk-proj-4fG7hJ2kL9mN3pQ8rS1tV6wX", "api_key", "sk-proj-4fG7hJ2kL9mN3pQ8rS1tV6wX"),
    ("slack xoxb-2048-1234567890-AbCdEfGhIj", "api_key", "xoxb-2048-1234567890-AbCdEfGhIj"),
    ('api_key = "Zx9Kq2Lm8Np4Rt6Vw1Yb"', "api_key", "Zx9Kq2Lm8Np4Rt6Vw1Yb"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.4f9aB2", "api_key", "eyJhbGciOiJIUzI1NiJ9.e30.4f9aB2"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==", "private_key", "-----BEGIN OPENSSH PRIVATE KEY-----"),
    ("server at 10.20.30.40.", "ip_address", "10.20.30.40"),
    ("host fe80::1ff:fe23:4567:890a here", "ip_address", "fe80::1ff:fe23:4567:890a"),
])
def test_each_kind_is_found_with_its_exact_span(text: str, kind: str, value: str) -> None:
    matches = find_pii(text)
    assert [(m.kind, m.text) for m in matches] == [(kind, value)]
    m = matches[0]
    assert text[m.start:m.end] == value
    assert isinstance(m, PiiMatch)
    with pytest.raises(AttributeError):
        m.kind = "other"  # type: ignore[misc]  # frozen


@pytest.mark.parametrize("text", [
    "Python 3.11.2 was released on 2023-02-08; see PEP 3147 and bpo-12345.",  # versions, dates
    "hex 0x7fffffff and 0xDEADBEEF; 2**64 == 18446744073709551616",  # hex, a 20-digit integer
    "card 4111 1111 1111 1112",  # Luhn-invalid
    "id 1234567890123456",  # Luhn-invalid digit run
    "zeros 0000 0000 0000 0000",  # Luhn-valid filler
    "GB82 WEST 1234 5698 7654 33",  # mod-97 fails
    "octets 256.1.1.1 and 1.2.3 and 01.02.03.04",
    "slices x[1::2] and a[::3], time 12:30:45, MAC 00:1A:2B:3C:4D:5E",
    "password = getpass.getpass()  # a call, not a secret",
    "token = tokenize.generate_tokens(readline)",
    "use sk-learn-style estimators",  # sk- followed by words
    "phone-ish 555-1234 and 1-800 and extension 12345",
    "the email module handles From: headers; user@ is not an address",
    "selm link https://groups.google.com/groups?selm=34A04430.CF9@ohioee.com",  # Usenet message id
])
def test_look_alikes_are_not_flagged(text: str) -> None:
    assert find_pii(text) == []


def test_email_in_a_url_parameter_that_names_an_address_is_flagged() -> None:
    assert kinds("https://example.org/signup?email=jane.doe@gmail.com") == ["email"]


def test_reserved_values_are_flagged_by_default_and_allowed_on_request() -> None:
    text = "mail receiver@example.com from 127.0.0.1 or 192.0.2.7 or 2001:db8::1 or ::1"
    assert kinds(text) == ["email", "ip_address", "ip_address", "ip_address"]
    assert find_pii(text, allow_reserved=True) == []
    # a private address is not reserved: it names a real host on someone's network
    assert kinds("gateway 192.168.1.1", allow_reserved=True) == ["ip_address"]


def test_overlapping_matches_keep_the_higher_priority_kind() -> None:
    # an IBAN also looks like digit groups; it must be reported once, as an IBAN
    assert kinds("DE89 3704 0044 0532 0130 00") == ["iban"]


def test_redact_replaces_every_match_and_keeps_the_rest() -> None:
    text = "Mail jane@corp.io or call +49 30 901820 11, card 4242424242424242."
    assert redact(text) == "Mail [EMAIL] or call [PHONE], card [CREDIT_CARD]."
    assert redact("nothing here 3.11") == "nothing here 3.11"


def test_checksum_helpers() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST12345698765433")
    assert not iban_valid("GB82WEST1234569876543")  # GB IBANs have 22 characters


def test_committed_python_faq_has_no_pii(repo_root) -> None:
    folder = repo_root / "datasets" / "python-faq"
    if not folder.is_dir():
        pytest.skip("datasets/python-faq not ingested in this checkout")
    hits = []
    for name in ("train.jsonl", "eval.jsonl"):
        for line in (folder / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for field in ("question", "answer"):
                hits += [(row["id"], field, m) for m in find_pii(row[field], allow_reserved=True)]
    assert hits == []
