"""Prompt lint: each kind of defect is found with its file and line; the repo's prompts are clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.prompt_lint import TokenCounter, lint_prompt_file
from llmops.cli import main

GOOD = """\
id: p
description: test prompt
messages:
  - role: system
    content: You answer questions about Python.
  - role: user
    content: |-
      Context: {{ context }}
      Question: {{ question }}
      Answer:
variables:
  question:
    type: string
  context:
    type: string
    required: false
params:
  max_tokens: 16
examples:
  - question: What is a list?
    context: Lists are mutable sequences.
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def errors(findings):
    return [f for f in findings if f.severity == "error"]


def test_clean_prompt_has_no_findings(tmp_path: Path) -> None:
    assert lint_prompt_file(write(tmp_path, GOOD), None) == []


def test_repo_prompts_have_no_errors(repo_root: Path) -> None:
    for path in sorted((repo_root / "prompts").glob("*.yaml")):
        assert errors(lint_prompt_file(path, None)) == [], path


def test_undeclared_variable_names_the_template_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("Answer:", "Answer in {{ language }}:"))
    found = errors(lint_prompt_file(path, None))
    [finding] = [f for f in found if "'language' is used in the template but not declared" in f.message]
    assert finding.line == 10 and finding.file == str(path)
    # StrictUndefined makes the examples fail to render too: both are reported.
    assert any("example 1 does not render: 'language' is undefined" in f.message for f in found)


def test_unused_variable_names_its_declaration(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("      Context: {{ context }}\n", ""))
    [finding] = errors(lint_prompt_file(path, None))
    assert "'context' is declared but the template never uses it" in finding.message
    assert finding.line == 14 and finding.field == "variables.context"


def test_example_that_does_not_render(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  - question: What is a list?\n", "  - questions: What is a list?\n"))
    found = errors(lint_prompt_file(path, None))
    assert any("example 1 does not render" in f.message and f.line == 20 for f in found)


def test_example_over_the_context(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    counter = TokenCounter(count=lambda s: len(s.split()), context=20, source="words")
    [finding] = errors(lint_prompt_file(path, counter))
    assert "> the model's context of 20" in finding.message and finding.field == "examples[0]"


def test_syntax_error_and_schema_errors(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("{{ question }}", "{{ question }"))
    assert "template syntax error" in errors(lint_prompt_file(path, None))[0].message
    path = write(tmp_path, GOOD.replace("max_tokens: 16", "max_tokens: 16\n  top_k: 3"))
    [finding] = errors(lint_prompt_file(path, None))
    assert finding.field == "params.top_k" and finding.message == "unknown key"


def test_cli_exits_1_on_a_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, GOOD)
    assert main(["prompts", "lint", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("id: p", "id: bad").replace("Answer:", "{{ oops }}"))
    assert main(["prompts", "lint", str(bad)]) == 1
    assert f"{bad}:10 [messages[1].content]: error: variable 'oops' is used" in capsys.readouterr().out


def test_messages_must_end_with_one_user_message(tmp_path: Path) -> None:
    swapped = GOOD.replace("  - role: system\n    content: You answer questions about Python.\n", "") + \
        "messages_extra: 1\n"
    [finding] = errors(lint_prompt_file(write(tmp_path, swapped), None))
    assert finding.message == "unknown key"
    two_users = GOOD.replace("role: system", "role: user")
    [finding] = errors(lint_prompt_file(write(tmp_path, two_users), None))
    assert "one user message" in finding.message and finding.line == 4


def test_missing_system_message_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  - role: system\n    content: You answer questions about Python.\n", ""))
    [finding] = lint_prompt_file(path, None)
    assert finding.severity == "warning" and "no system message" in finding.message and finding.field == "messages"


def test_examples_are_counted_through_the_chat_template(tmp_path: Path) -> None:
    from llmops.prompts import ChatFormat

    chat = ChatFormat("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>")
    path = write(tmp_path, GOOD)
    seen = []
    counter = TokenCounter(count=lambda s: seen.append(s) or 1, context=1000, source="t", chat=chat)
    assert lint_prompt_file(path, counter) == []
    assert seen and seen[0].startswith("<|system|>You answer") and seen[0].endswith("<|assistant|>")
