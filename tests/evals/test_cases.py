"""Case files: the repo's cases load; a bad case file is an InputError naming file, line and case.

    .venv/bin/pytest tests/evals/test_cases.py
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from evals.rule_evals import load_cases, load_thresholds, select_cases
from llmops.errors import InputError

GOOD = """\
- id: ok-case
  prompt: answer
  vars:
    question: What is a lambda?
  assert:
    - {type: contains, value: lambda}
"""


def test_repo_cases_load(repo_root: Path) -> None:
    cases = load_cases(repo_root / "evals" / "cases", repo_root / "prompts")
    suites = Counter(c.suite for c in cases)
    assert len(cases) >= 40
    assert set(suites) == {"quality", "refusal", "grounding", "json", "json_form", "safety"}
    smoke = select_cases(cases, tags=["smoke"])
    assert 6 <= len(smoke) <= 10
    assert {c.prompt for c in cases} == {"answer", "answer_json"}
    # each smoke case points back at its file and line for report.md
    assert all(c.file.endswith(".yaml") and c.line and c.line >= 1 for c in smoke)


def test_repo_thresholds_load(repo_root: Path) -> None:
    thresholds = load_thresholds(repo_root / "evals" / "thresholds.yaml")
    assert set(thresholds.suites) == {"quality", "refusal", "grounding", "json", "json_form", "safety"}


def _write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    folder = tmp_path / "cases"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return folder


def _load_error(tmp_path: Path, repo_root: Path, text: str) -> InputError:
    folder = _write(tmp_path, GOOD + text)
    with pytest.raises(InputError) as info:
        load_cases(folder, repo_root / "prompts")
    return info.value


def test_unknown_assertion_type(tmp_path: Path, repo_root: Path) -> None:
    err = _load_error(tmp_path, repo_root, """\
- id: typo-case
  prompt: answer
  vars: {question: "What is a lambda?"}
  assert:
    - {type: contains, value: lambda}
    - {type: contain, value: lambda}
""")
    assert "bad.yaml" in str(err) and "'typo-case'" in str(err)
    assert "unknown assertion type 'contain'" in str(err)
    assert err.line == 12 and err.field == "assert[1].type"


def test_missing_field(tmp_path: Path, repo_root: Path) -> None:
    err = _load_error(tmp_path, repo_root, """\
- id: no-asserts
  prompt: answer
  vars: {question: "What is a lambda?"}
""")
    assert "'no-asserts'" in str(err) and "Field required" in str(err)
    assert err.field == "assert" and err.line == 7


def test_unknown_prompt_id(tmp_path: Path, repo_root: Path) -> None:
    err = _load_error(tmp_path, repo_root, """\
- id: wrong-prompt
  prompt: anser
  vars: {question: "What is a lambda?"}
  assert: [{type: must-refuse}]
""")
    assert "'wrong-prompt'" in str(err) and "unknown prompt id 'anser'" in str(err)
    assert err.file.endswith("bad.yaml") and err.line == 8 and err.field == "prompt"


def test_unknown_key_in_case_and_assertion(tmp_path: Path, repo_root: Path) -> None:
    err = _load_error(tmp_path, repo_root, """\
- id: extra-key
  prompt: answer
  varz: {question: x}
  assert: [{type: must-refuse}]
""")
    assert "unknown key 'varz'" in str(err) and err.line == 9
    err = _load_error(tmp_path, repo_root, """\
- id: extra-assert-key
  prompt: answer
  vars: {question: x}
  assert: [{type: contains, valu: x}]
""")
    assert "'extra-assert-key'" in str(err) and "unknown key 'valu'" in str(err)


def test_bad_assertion_value(tmp_path: Path, repo_root: Path) -> None:
    err = _load_error(tmp_path, repo_root, """\
- id: bad-regex
  prompt: answer
  vars: {question: x}
  assert: [{type: regex, value: "(open"}]
""")
    assert "'bad-regex'" in str(err) and "invalid regex" in str(err)


def test_vars_must_fit_the_prompt(tmp_path: Path, repo_root: Path) -> None:
    err = _load_error(tmp_path, repo_root, """\
- id: unknown-var
  prompt: answer
  vars: {question: x, contxt: y}
  assert: [{type: must-refuse}]
""")
    assert "'unknown-var'" in str(err) and "no variable 'contxt'" in str(err) and err.field == "vars.contxt"
    err = _load_error(tmp_path, repo_root, """\
- id: missing-var
  prompt: answer
  vars: {context: y}
  assert: [{type: must-refuse}]
""")
    assert "'missing-var'" in str(err) and "question" in str(err)
    err = _load_error(tmp_path, repo_root, """\
- id: ungrounded
  prompt: answer
  vars: {question: x}
  assert: [{type: grounded-in-context}]
""")
    assert "'ungrounded'" in str(err) and "needs a `context` var" in str(err)


def test_unknown_tag_and_duplicate_id(tmp_path: Path, repo_root: Path) -> None:
    err = _load_error(tmp_path, repo_root, """\
- id: tagged
  prompt: answer
  tags: [smok]
  vars: {question: x}
  assert: [{type: must-refuse}]
""")
    assert "'tagged'" in str(err) and err.field == "tags[0]"
    err = _load_error(tmp_path, repo_root, GOOD)
    assert "'ok-case' is already used at" in str(err) and err.line == 7


def test_not_a_list_and_bad_yaml(tmp_path: Path, repo_root: Path) -> None:
    folder = _write(tmp_path, "id: x\n")
    with pytest.raises(InputError, match="a YAML list of cases"):
        load_cases(folder, repo_root / "prompts")
    folder = _write(tmp_path, "- id: x\n  vars: [unclosed\n")
    with pytest.raises(InputError, match="invalid YAML") as info:
        load_cases(folder, repo_root / "prompts")
    assert info.value.line is not None


def test_bad_thresholds_key(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text("suites:\n  quality: {min: 0.5, max_dorp: 0.1}\n")
    with pytest.raises(InputError, match="unknown key 'max_dorp'") as info:
        load_thresholds(path)
    assert info.value.line == 2 and info.value.field == "suites.quality.max_dorp"
