"""The dataset contract: one row of `datasets/<name>/*.jsonl`, JSONL reading/writing, and the dataset card.

    .venv/bin/python -c "from llmops.dataset import load_card; print(load_card('datasets/python-faq'))"

A dataset is a folder `datasets/<name>/` with `train.jsonl`, `eval.jsonl` and a `README.md` card in
Hugging Face dataset-card format: YAML front matter (licence, pretty_name, size_categories,
task_categories, `configs` so that `datasets.load_dataset(folder)` finds the splits, and an `llmops:`
block with the source, the sha256 and row count of each file, the command that made it and the date)
followed by a short description. Row schema version 1. The card of newly written files is built by
data/cards.py (card_for), the one card builder of ingestion and the feedback export.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from llmops.errors import InputError
from llmops.files import atomic_write_text

ROW_SCHEMA_VERSION = 1
CARD_FILE = "README.md"
TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"

# Limits in characters. The longest Python FAQ answer is about 9k characters (code included);
# the limits catch a broken extraction (a whole page in one answer) without cutting real rows.
MAX_ID = 200
MAX_QUESTION = 2_000
MAX_ANSWER = 20_000
MAX_CONTEXT = 50_000
MAX_SOURCE = 1_000
MAX_TAGS = 20
MAX_TAG = 64

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"
SPDX_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*(?: (?:AND|OR|WITH) [A-Za-z0-9][A-Za-z0-9.+-]*)*$")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class DatasetRow(BaseModel):
    """One question/answer pair. Unknown keys are errors, and strings are never coerced from numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StrictStr = Field(min_length=1, max_length=MAX_ID, pattern=_ID_PATTERN,
                          description="Stable, unique across the dataset's files; survives re-ingest.")
    question: StrictStr = Field(min_length=1, max_length=MAX_QUESTION, description="The user's question.")
    answer: StrictStr = Field(min_length=1, max_length=MAX_ANSWER, description="The reference answer.")
    context: StrictStr | None = Field(default=None, max_length=MAX_CONTEXT,
                                      description="Optional grounding passage the answer is drawn from.")
    source: StrictStr = Field(min_length=1, max_length=MAX_SOURCE,
                              description="Where the row comes from: URL with #anchor, or path and section.")
    tags: list[StrictStr] = Field(default_factory=list, max_length=MAX_TAGS,
                                  description="Free labels (page, section) used for filtering and grouping.")
    prompt: StrictStr | None = Field(default=None, min_length=1, max_length=MAX_TAG, pattern=r"^[A-Za-z0-9_-]+$",
                                     description="Prompt id (prompts/<id>.yaml) the row is rendered with; "
                                                 "absent: the training config's `prompt`.")

    _blank_question = field_validator("question", "answer", "source")(_not_blank)

    @field_validator("tags")
    @classmethod
    def _tag_lengths(cls, tags: list[str]) -> list[str]:
        for tag in tags:
            if not 1 <= len(tag) <= MAX_TAG:
                raise ValueError(f"each tag must have 1-{MAX_TAG} characters, got {len(tag)}")
        return tags

    def to_json_line(self) -> str:
        """One JSONL line, keys in schema order, `context` omitted when absent, UTF-8 kept as is."""
        return json.dumps(self.model_dump(exclude_none=True), ensure_ascii=False) + "\n"


def validate_row(record: Any) -> list[tuple[str, str]]:
    """[(field, message)] for every schema violation of one parsed JSONL record; [] when valid."""
    if not isinstance(record, dict):
        return [("", f"row must be a JSON object, got {type(record).__name__}")]
    try:
        DatasetRow.model_validate(record)
    except ValidationError as exc:
        return [(".".join(str(p) for p in err["loc"]) or "", err["msg"]) for err in exc.errors()]
    return []


def read_jsonl(path: Path | str) -> Iterator[tuple[int, Any]]:
    """Yield (1-based line number, parsed JSON value) for each non-blank line of `path`.

    Raises InputError naming the file and line for unreadable files, bad UTF-8 or bad JSON.
    """
    path = Path(path)
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    with handle:
        line_number = 0
        try:
            for line_number, line in enumerate(handle, start=1):  # noqa: B007 - used after the loop on error
                if not line.strip():
                    continue
                try:
                    yield line_number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"bad JSON: {exc.msg} at column {exc.colno}", file=str(path),
                                     line=line_number) from exc
        except UnicodeDecodeError as exc:
            raise InputError("not UTF-8 text", file=str(path), line=line_number + 1) from exc


def write_jsonl(path: Path, rows: list[DatasetRow]) -> None:
    """Write rows atomically (temp file, then rename): a crash leaves the old file or the new one."""
    atomic_write_text(path, "".join(row.to_json_line() for row in rows))


# --- the dataset card --------------------------------------------------------------------------------

class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    rows: int = Field(ge=0)


class CardLineage(BaseModel):
    """The `llmops:` block of the card's front matter."""

    model_config = ConfigDict(extra="forbid")

    name: str
    source: str = Field(description="Where the rows came from: URL, package or path.")
    source_sha256: str | None = Field(default=None, description="sha256 over the source files, in order.")
    command: str = Field(description="The exact command that wrote these files.")
    created: str = Field(description="ISO date the content last changed (kept on identical re-ingest).")
    row_schema: int = ROW_SCHEMA_VERSION
    split: dict[str, Any] = Field(default_factory=dict, description="How train/eval were separated.")
    cleaning: dict[str, Any] = Field(default_factory=dict, description="What ingest changed or dropped.")
    files: dict[str, FileEntry]


class DatasetCard(BaseModel):
    """A parsed `README.md` card. `.license` is an SPDX id, `.files` maps file name -> sha256 and rows."""

    model_config = ConfigDict(extra="allow")

    license: str
    pretty_name: str
    size_categories: list[str] = Field(default_factory=list)
    task_categories: list[str] = Field(default_factory=list)
    language: list[str] = Field(default_factory=list)
    llmops: CardLineage
    description: str = Field(default="", exclude=True)

    @field_validator("license")
    @classmethod
    def _spdx(cls, value: str) -> str:
        if not SPDX_PATTERN.match(value):
            raise ValueError(f"not an SPDX licence id or expression: {value!r}")
        return value

    @property
    def files(self) -> dict[str, FileEntry]:
        return self.llmops.files

    @property
    def source(self) -> str:
        return self.llmops.source

    @property
    def command(self) -> str:
        return self.llmops.command

    @property
    def created(self) -> str:
        return self.llmops.created


def size_category(rows: int) -> str:
    """Hugging Face's size_categories bucket for a row count."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "n>1M"


def load_card(dataset_dir: Path | str) -> DatasetCard:
    """Parse `<dataset_dir>/README.md`. A missing card, bad YAML or a missing field is an InputError."""
    import yaml

    path = Path(dataset_dir) / CARD_FILE
    if not path.is_file():
        raise InputError("dataset card missing: every dataset needs a README.md card "
                         "(run `llmops data ingest ...` to write one)", file=str(path))
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(?:\n|$)(.*)", text, re.DOTALL)
    if not match:
        raise InputError("dataset card has no YAML front matter between '---' lines", file=str(path), line=1)
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1  # +1 for 1-based, +1 for the opening '---'
        raise InputError(f"card front matter is not valid YAML: {exc}", file=str(path), line=line) from exc
    if not isinstance(meta, dict):
        raise InputError("card front matter must be a YAML mapping", file=str(path), line=2)
    try:
        return DatasetCard.model_validate({**meta, "description": match.group(2).strip()})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InputError(f"card front matter: {err['msg']} ({len(exc.errors())} problem(s))",
                         file=str(path), field=field) from exc


def render_card(card: DatasetCard) -> str:
    """The README.md text: YAML front matter then the description, stable key order."""
    import yaml

    meta = card.model_dump(mode="json", exclude={"description"})
    meta["configs"] = [{
        "config_name": "default",
        "data_files": [{"split": "train" if name == TRAIN_FILE else Path(name).stem, "path": name}
                       for name in card.files],
    }]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{front}---\n\n{card.description.strip()}\n"


def write_card(dataset_dir: Path, card: DatasetCard) -> Path:
    path = Path(dataset_dir) / CARD_FILE
    atomic_write_text(path, render_card(card))
    return path

