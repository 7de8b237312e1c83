"""The dataset-row contract, JSONL reading/writing and the dataset card.

    .venv/bin/pytest tests/test_dataset.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.dataset import (
    CardLineage,
    DatasetCard,
    DatasetRow,
    FileEntry,
    load_card,
    read_jsonl,
    render_card,
    validate_row,
    write_card,
    write_jsonl,
)
from llmops.errors import InputError

GOOD = {"id": "faq-1", "question": "What is Python?", "answer": "A programming language.",
        "source": "https://docs.python.org/3.11/faq/general.html#what-is-python"}


def test_a_valid_row_has_no_problems_and_optional_fields_default() -> None:
    assert validate_row(GOOD) == []
    row = DatasetRow.model_validate(GOOD)
    assert row.context is None and row.tags == []


@pytest.mark.parametrize(("change", "field"), [
    ({"question": None}, "question"),
    ({"answer": 42}, "answer"),  # numbers are not coerced to strings
    ({"question": "   "}, "question"),
    ({"id": "has spaces"}, "id"),
    ({"id": ""}, "id"),
    ({"answer": "x" * 20_001}, "answer"),
    ({"tags": "python"}, "tags"),
    ({"tags": ["x" * 65]}, "tags"),
    ({"extra": 1}, "extra"),  # unknown keys are errors
])
def test_schema_violations_name_the_field(change: dict, field: str) -> None:
    record = {**GOOD, **change}
    problems = validate_row(record)
    assert problems and problems[0][0] == field


def test_missing_field_and_non_object_rows() -> None:
    record = dict(GOOD)
    del record["source"]
    assert [f for f, _ in validate_row(record)] == ["source"]
    assert validate_row(["a", "list"])[0][1].startswith("row must be a JSON object")


def test_read_jsonl_yields_line_numbers_and_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2}\n{"c": \n', encoding="utf-8")
    rows = []
    with pytest.raises(InputError) as excinfo:
        for item in read_jsonl(path):
            rows.append(item)
    assert rows == [(1, {"a": 1}), (3, {"b": 2})]
    assert excinfo.value.line == 4 and excinfo.value.file == str(path)
    assert f"{path}:4" in str(excinfo.value)


def test_read_jsonl_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        list(read_jsonl(tmp_path / "nope.jsonl"))


def test_write_jsonl_round_trips_unicode_and_leaves_no_temp_files(tmp_path: Path) -> None:
    rows = [DatasetRow.model_validate({**GOOD, "answer": "Ünïcode — kept"}),
            DatasetRow.model_validate({**GOOD, "id": "faq-2", "context": "ctx", "tags": ["a"]})]
    path = tmp_path / "d" / "train.jsonl"
    write_jsonl(path, rows)
    text = path.read_text(encoding="utf-8")
    assert "Ünïcode — kept" in text and '"context"' not in text.splitlines()[0]
    assert [DatasetRow.model_validate(r) for _, r in read_jsonl(path)] == rows
    assert [p.name for p in path.parent.iterdir()] == ["train.jsonl"]


def _card() -> DatasetCard:
    return DatasetCard(
        license="PSF-2.0", pretty_name="Test", size_categories=["n<1K"], task_categories=["question-answering"],
        llmops=CardLineage(name="test", source="unit test", command="llmops data ingest file x.csv",
                           created="2026-01-01", files={"train.jsonl": FileEntry(sha256="a" * 64, rows=3)}),
        description="# Test\n\nA card.")


def test_card_round_trip(tmp_path: Path) -> None:
    write_card(tmp_path, _card())
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\nlicense: PSF-2.0\n")
    assert "config_name: default" in text  # Hugging Face's datasets finds the splits
    card = load_card(tmp_path)
    assert card.license == "PSF-2.0"
    assert card.files["train.jsonl"].rows == 3 and card.files["train.jsonl"].sha256 == "a" * 64
    assert card.command == "llmops data ingest file x.csv" and card.created == "2026-01-01"
    assert card.description == "# Test\n\nA card."
    assert render_card(card) == text  # reading and writing again changes nothing


def test_missing_card_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="dataset card missing"):
        load_card(tmp_path)


@pytest.mark.parametrize(("text", "expected"), [
    ("no front matter\n", "no YAML front matter"),
    ("---\nlicense: [unclosed\n---\n", "not valid YAML"),
    ("---\n- a list\n---\n", "must be a YAML mapping"),
    ("---\nlicense: MIT\npretty_name: x\n---\n", "llmops"),
    ("---\nlicense: not a licence!\npretty_name: x\nllmops: {name: x, source: s, command: c, created: d, "
     "files: {}}\n---\n", "SPDX"),
])
def test_unparseable_card_is_an_input_error(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "README.md").write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=expected):
        load_card(tmp_path)
