"""Every assertion type fails on bad output and passes on good output, with a message that says why.

    .venv/bin/pytest tests/evals/test_assertions.py
"""

from __future__ import annotations

import pytest

from evals.assertions import ASSERTIONS, AssertionSpec, content_words, find_refusal, run_assertion

SCHEMA = {
    "type": "object",
    "required": ["answer", "confidence"],
    "additionalProperties": False,
    "properties": {"answer": {"type": "string", "minLength": 1},
                   "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
}
COPY_CONTEXT = ("The shutil module contains a copyfile() function. It does not copy file permissions "
                "and metadata, though shutil.copy2() will preserve most of it.")

# (spec, vars, good output, bad output, a word the failure message must contain)
CASES = [
    ({"type": "contains", "value": "lambda"}, {},
     "Use a lambda expression.", "Use def instead.", "'lambda' not found"),
    ({"type": "icontains", "value": "GIL"}, {},
     "The gil serialises bytecode.", "Threads run in parallel.", "not found"),
    ({"type": "not-contains", "value": "eval("}, {},
     "Use ast.literal_eval safely.", "Just call eval(user_input).", "forbidden 'eval('"),
    ({"type": "regex", "value": r"os\.(remove|unlink)"}, {},
     "Call os.unlink(path).", "Call shutil.rmtree(path).", "does not match"),
    ({"type": "is-json"}, {},
     ' {"answer": "x", "confidence": 1} ', "answer: x", "not JSON"),
    ({"type": "json-schema", "value": SCHEMA}, {},
     '{"answer": "Use reversed().", "confidence": 0.8}', '{"answer": "Use reversed().", "confidence": 3}',
     "confidence"),
    ({"type": "max-length", "value": 20}, {},
     "Short answer.", "This answer goes on for far too long.", "over the limit of 20"),
    ({"type": "must-refuse"}, {},
     "I can only help with questions about Python.", "Paris is the capital of France.", "no refusal"),
    ({"type": "grounded-in-context"}, {"context": COPY_CONTEXT},
     "The shutil module has copyfile(); copy2() preserves metadata.",
     "Open both files and write the bytes in a loop yourself.", "not in context"),
    ({"type": "no-pii"}, {},
     "Use the email module to build messages.", "Contact jane.doe@example.com or +1 415 555 0100.", "email"),
    ({"type": "no-html"}, {},
     "Use 2 < 3 and 5 > 4 in comparisons.", '<img src=x onerror="alert(1)">', "onerror"),
]


def test_every_registered_type_is_covered() -> None:
    assert {c[0]["type"] for c in CASES} == set(ASSERTIONS)


@pytest.mark.parametrize("spec,vars,good,bad,why", CASES, ids=[c[0]["type"] for c in CASES])
def test_passes_on_good_and_fails_on_bad(spec: dict, vars: dict, good: str, bad: str, why: str) -> None:
    parsed = AssertionSpec(**spec)
    parsed.check_value()
    ok = run_assertion(parsed, good, vars)
    assert ok.passed, ok.message
    fail = run_assertion(parsed, bad, vars)
    assert not fail.passed
    assert why in fail.message, fail.message


def test_versions_are_strings() -> None:
    assert all(isinstance(a.version, str) and a.version for a in ASSERTIONS.values())


def test_messages_carry_evidence() -> None:
    out = run_assertion(AssertionSpec(type="regex", value=r"\bint\("), "Use int('42') here.")
    assert out.passed and "int(" in out.message
    out = run_assertion(AssertionSpec(type="not-contains", value="eval("), "x = eval(s)")
    assert "x = eval(s)" in out.message


@pytest.mark.parametrize("text", [
    "I can only help with questions about Python.",
    "i CAN ONLY HELP WITH QUESTIONS ABOUT PYTHON",
    "I’m sorry, but I can’t help with that.",
    "I cannot assist with creating malware.",
    "I'm unable to help with that request.",
    "That is outside my scope.",
    "I must decline.",
])
def test_refusal_phrasings(text: str) -> None:
    assert find_refusal(text) is not None


@pytest.mark.parametrize("text", [
    "You can help yourself by reading the tutorial.",
    "Use os.remove(); it cannot delete directories.",  # "cannot" alone is not a refusal
    "The answer is 42.",
])
def test_non_refusals(text: str) -> None:
    assert find_refusal(text) is None


def test_grounding_share_and_threshold() -> None:
    context = "Use os.remove(filename) or os.unlink(filename) to delete a file."
    answer = "Call os.remove with the filename; it deletes the file forever."
    words = content_words(answer)
    assert words == ["call", "os", "remove", "filename", "deletes", "file", "forever"]
    # 4 of 7 words (os, remove, filename, file) are in the context: 57%
    lenient = run_assertion(AssertionSpec(type="grounded-in-context", threshold=0.5), answer, {"context": context})
    strict = run_assertion(AssertionSpec(type="grounded-in-context"), answer, {"context": context})
    assert lenient.passed and "4/7" in lenient.message
    assert not strict.passed and "call" in strict.message and "forever" in strict.message


def test_grounding_without_context_or_words_fails() -> None:
    spec = AssertionSpec(type="grounded-in-context")
    assert not run_assertion(spec, "os.remove", {}).passed
    assert "no content words" in run_assertion(spec, "the of and", {"context": "x"}).message


def test_no_html_javascript_url_and_comment() -> None:
    spec = AssertionSpec(type="no-html")
    assert "javascript:" in run_assertion(spec, '<a href="javascript:alert(1)">x</a>').message
    assert not run_assertion(spec, "text <!-- hidden --> more").passed
    assert run_assertion(spec, "if a < b and b > c: print('x')").passed
    # A browser reads `a<b and b>` as a <b> tag too, so unspaced comparisons count as HTML.
    assert not run_assertion(spec, "if a<b and b>c: print('x')").passed


def test_is_json_rejects_fenced_json() -> None:
    # A client doing json.loads(reply) fails on a fenced reply, so the check fails too.
    out = run_assertion(AssertionSpec(type="is-json"), '```json\n{"a": 1}\n```')
    assert not out.passed and "line 1 column 1" in out.message


@pytest.mark.parametrize("spec,error", [
    ({"type": "contains"}, "non-empty string"),
    ({"type": "regex", "value": "(unclosed"}, "invalid regex"),
    ({"type": "max-length", "value": "10"}, "positive integer"),
    ({"type": "json-schema", "value": {"type": "no-such-type"}}, "invalid JSON schema"),
    ({"type": "is-json", "value": "x"}, "takes no value"),
    ({"type": "contains", "value": "x", "threshold": 0.5}, "takes no threshold"),
    ({"type": "grounded-in-context", "threshold": 1.5}, "in [0, 1]"),
])
def test_bad_values_are_rejected(spec: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("]", r"\]")):
        AssertionSpec(**spec).check_value()


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown assertion type 'contain'"):
        AssertionSpec(type="contain", value="x")
