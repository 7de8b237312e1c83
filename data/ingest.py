"""Ingest question/answer data into `datasets/<name>/` (train.jsonl, eval.jsonl, README.md card).

    llmops data ingest python-faq
    llmops data ingest file faq.csv --name team-faq --question q --answer a --license CC-BY-4.0

Both paths share the cleaning (data/clean.py: NFKC, invisible characters removed, prose whitespace
collapsed, code blocks kept, HTML turned into text), the split (data/split.py: exact duplicates
dropped and counted in the card, related groups merged, a deterministic group split, so
re-ingesting the same input gives byte-identical files) and the card (data/cards.py: the date is
kept from the previous card when the files' sha256 did not change).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from data.cards import card_for, keep_previous_date
from data.clean import blocks_to_text, clean_multiline, clean_prose, element_blocks, slugify
from data.split import Candidate, drop_exact_duplicates, split_candidates
from llmops.dataset import (
    EVAL_FILE,
    SPDX_PATTERN,
    TRAIN_FILE,
    DatasetCard,
    DatasetRow,
    write_card,
    write_jsonl,
)
from llmops.errors import InputError
from llmops.files import sha256_bytes, sha256_file

PYTHON_FAQ_DIR = Path("/usr/share/doc/python3.11/html/faq")
PYTHON_FAQ_URL = "https://docs.python.org/3.11/faq/"
PYTHON_FAQ_PACKAGE = "python3.11-doc"


# --- writing a dataset (shared by both ingest paths) ----------------------------------------------------

@dataclass
class IngestResult:
    dataset_dir: Path
    train_rows: int
    eval_rows: int
    card: DatasetCard
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.train_rows + self.eval_rows


def write_dataset(dataset_dir: Path, candidates: list[Candidate], *, license: str, pretty_name: str,
                  source: str, source_sha256: str | None, command: str, description: str,
                  cleaning: dict[str, Any]) -> IngestResult:
    """Split, write train/eval atomically, then the card (the card last, so its sha256s describe them)."""
    if not SPDX_PATTERN.match(license):
        raise InputError(f"not an SPDX licence id: {license!r} (e.g. PSF-2.0, MIT, CC-BY-4.0)", field="license")
    candidates, duplicates = drop_exact_duplicates(candidates)
    cleaning = {**cleaning, "dropped_exact_duplicates": duplicates}
    train, held_out, split_info = split_candidates(candidates)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(dataset_dir / TRAIN_FILE, train)
    write_jsonl(dataset_dir / EVAL_FILE, held_out)
    rows = {TRAIN_FILE: len(train), EVAL_FILE: len(held_out)}
    card = card_for(dataset_dir, rows, license=license, pretty_name=pretty_name, source=source,
                    source_sha256=source_sha256, command=command, description=description,
                    task_categories=["question-answering", "text-generation"], split=split_info,
                    cleaning=cleaning, size_rows=len(candidates),
                    created=dt.datetime.now(dt.UTC).date().isoformat())
    write_card(dataset_dir, keep_previous_date(dataset_dir, card))
    return IngestResult(dataset_dir, len(train), len(held_out), card, cleaning)


# --- the Python FAQ ----------------------------------------------------------------------------------

def _sections(doc: Any) -> list[Any]:
    """Sphinx sections: <section> (Sphinx >= 4 with HTML5) or <div class="section"> (older)."""
    return [el for el in doc.iter("section", "div")
            if el.tag == "section" or "section" in (el.get("class") or "").split()]


def _heading(section: Any) -> Any | None:
    for child in section:
        if isinstance(child.tag, str) and re.fullmatch(r"h[1-6]", child.tag):
            return child
    return None


def parse_faq_page(path: Path) -> list[Candidate]:
    """Question/answer pairs of one FAQ page: each leaf section under the page title is a question,
    its heading the question and its content the answer. Grouped by the enclosing h2 section or page."""
    import lxml.html

    # Sphinx writes UTF-8; without a <meta charset> lxml would guess Latin-1, so say it.
    doc = lxml.html.document_fromstring(path.read_bytes(), parser=lxml.html.HTMLParser(encoding="utf-8"))
    for link in doc.xpath('//a[contains(concat(" ", @class, " "), " headerlink ")]'):
        link.drop_tree()  # the "¶" permalink inside each heading
    stem = path.stem
    sections = _sections(doc)
    section_set = set(sections)
    out: list[Candidate] = []
    used_ids: set[str] = set()
    for section in sections:
        heading = _heading(section)
        if heading is None or heading.tag == "h1":
            continue
        if any(d in section_set for d in section.iterdescendants()):
            continue  # a section with sub-sections is a group of questions, not a question
        question = clean_prose(heading.text_content())
        answer = blocks_to_text(b for child in section if child is not heading and isinstance(child.tag, str)
                                for b in element_blocks(child))
        if not question or not answer:
            continue
        parent = section.getparent()
        while parent is not None and parent not in section_set:
            parent = parent.getparent()
        parent_heading = _heading(parent) if parent is not None else None
        if parent_heading is None or parent_heading.tag == "h1":
            group = stem
        else:
            group = f"{stem}/{parent.get('id') or slugify(parent_heading.text_content())}"
        row_id = f"{stem}-{slugify(question)}"
        suffix = 2
        while row_id in used_ids:
            row_id, suffix = f"{stem}-{slugify(question)}-{suffix}", suffix + 1
        used_ids.add(row_id)
        tags = [stem] + ([group.split("/", 1)[1]] if "/" in group else [])
        row = DatasetRow(id=row_id, question=question, answer=answer,
                         source=f"{PYTHON_FAQ_URL}{path.name}#{section.get('id', '')}".rstrip("#"),
                         tags=tags)
        out.append(Candidate(row=row, group=group))
    return out


def _ensure_faq_source(source_dir: Path, explicit: bool) -> None:
    if source_dir.is_dir() and any(source_dir.glob("*.html")):
        return
    hint = f"install Debian's {PYTHON_FAQ_PACKAGE} (apt-get install {PYTHON_FAQ_PACKAGE}) or pass --source DIR"
    if explicit or not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise InputError(f"no FAQ HTML files found; {hint}", file=str(source_dir))
    result = subprocess.run(["apt-get", "install", "-y", PYTHON_FAQ_PACKAGE], capture_output=True, text=True)
    if result.returncode != 0 or not any(source_dir.glob("*.html")):
        raise InputError(f"apt-get install {PYTHON_FAQ_PACKAGE} failed: {result.stderr.strip()[-300:]}",
                         file=str(source_dir))


def ingest_python_faq(dataset_dir: Path, *, source_dir: Path | None = None, command: str) -> IngestResult:
    """Read every FAQ page (index.html holds only links), clean, split and write the dataset."""
    explicit = source_dir is not None
    source_dir = Path(source_dir or PYTHON_FAQ_DIR)
    _ensure_faq_source(source_dir, explicit)
    pages = sorted(p for p in source_dir.glob("*.html") if p.name != "index.html")
    candidates = [c for page in pages for c in parse_faq_page(page)]
    if not candidates:
        raise InputError("no question/answer pairs found in the FAQ HTML", file=str(source_dir))
    source_sha256 = sha256_bytes("".join(f"{p.name}:{sha256_file(p)}\n" for p in pages).encode())
    description = (
        "# Python FAQ question/answer pairs\n\n"
        "Question/answer pairs from the official Python 3.11 FAQ "
        f"({PYTHON_FAQ_URL}), read from the HTML that Debian's `{PYTHON_FAQ_PACKAGE}` package installs. "
        "Each question is a FAQ heading; the answer is the text under it, with code blocks kept as text. "
        "`eval.jsonl` holds whole FAQ sections that `train.jsonl` never sees.\n\n"
        "Licence: Python Software Foundation License Version 2 (PSF-2.0), as the Python documentation.\n\n"
        "Regenerate with the command in `llmops.command`; `llmops data check` verifies the sha256s."
    )
    return write_dataset(
        dataset_dir, candidates, license="PSF-2.0", pretty_name="Python FAQ question/answer pairs",
        source=f"{PYTHON_FAQ_URL} (Debian {PYTHON_FAQ_PACKAGE}: {source_dir})", source_sha256=source_sha256,
        command=command, description=description,
        cleaning={"pages": len(pages), "pairs_found": len(candidates)})


# --- a team's own table (CSV, JSON, JSONL, Parquet) -----------------------------------------------------

TABLE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
                 ".parquet": "parquet", ".pq": "parquet"}


def read_table(path: Path) -> Any:
    """A pandas DataFrame of `path`; every failure to read becomes an InputError naming the file."""
    import pandas as pd

    kind = TABLE_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"unknown file type {path.suffix!r}; use one of {', '.join(sorted(TABLE_FORMATS))}",
                         file=str(path))
    if not path.is_file():
        raise InputError("file not found", file=str(path))
    try:
        if kind == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if kind == "parquet":
            return pd.read_parquet(path)
        if kind == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        try:
            return pd.read_json(path, dtype=False)
        except ValueError:
            return pd.read_json(path, lines=True, dtype=False)  # .json files that are really JSON lines
    except Exception as exc:  # pandas raises many types (ParserError, ArrowInvalid, ValueError, ...)
        raise InputError(f"cannot read as {kind}: {exc}", file=str(path)) from exc


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def ingest_table(path: Path, dataset_dir: Path, *, question: str, answer: str, context: str | None = None,
                 id_column: str | None = None, group: str | None = None, license: str,
                 source: str | None = None, command: str) -> IngestResult:
    """Map a team's columns onto the row contract, then clean, split and write like the FAQ."""
    path = Path(path)
    frame = read_table(path)
    columns = [str(c) for c in frame.columns]
    for flag, column in (("--question", question), ("--answer", answer), ("--context", context),
                         ("--id", id_column), ("--group", group)):
        if column is not None and column not in columns:
            raise InputError(f"no column {column!r} for {flag}; columns are {columns}", file=str(path),
                             field=column)
    source_text = source or path.as_posix()
    name = dataset_dir.name
    # File line of data row n, for messages: CSV has a header line; Parquet and JSON arrays have no lines.
    kind = TABLE_FORMATS[path.suffix.lower()]
    line_offset = {"csv": 1, "jsonl": 0}.get(kind)
    candidates: list[Candidate] = []
    used_ids: dict[str, int] = {}
    for number, record in enumerate(frame.to_dict(orient="records"), start=1):
        line = number + line_offset if line_offset is not None else None
        q = clean_prose(_cell(record[question]))
        a = clean_multiline(_cell(record[answer]))
        ctx = clean_multiline(_cell(record[context])) if context else ""
        for column, value in ((question, q), (answer, a)):
            if not value:
                raise InputError(f"empty {column!r} in data row {number}", file=str(path), line=line,
                                 field=column)
        if id_column:
            row_id = clean_prose(_cell(record[id_column]))
            if row_id in used_ids:
                raise InputError(f"id {row_id!r} repeats data row {used_ids[row_id]}", file=str(path),
                                 line=line, field=id_column)
        else:
            digest = sha256_bytes(f"{q}\x1f{ctx}".encode())[:12]
            row_id = f"{name}-{digest}"
            suffix = 2
            while row_id in used_ids:
                row_id, suffix = f"{name}-{digest}-{suffix}", suffix + 1
        used_ids[row_id] = number
        try:
            row = DatasetRow(id=row_id, question=q, answer=a, context=ctx or None,
                             source=f"{source_text}#row={number}", tags=[name])
        except ValidationError as exc:
            err = exc.errors()[0]
            field_name = str(err["loc"][0]) if err["loc"] else ""
            column = {"id": id_column, "question": question, "answer": answer, "context": context}.get(
                field_name) or field_name
            raise InputError(f"data row {number}: {err['msg']}", file=str(path), line=line,
                             field=column) from exc
        group_key = _cell(record[group]) if group else row_id
        candidates.append(Candidate(row=row, group=f"group:{group_key}"))
    if not candidates:
        raise InputError("no rows", file=str(path))
    description = (f"# {name}\n\nQuestion/answer pairs ingested from `{path.name}` "
                   f"(question column `{question}`, answer column `{answer}`"
                   + (f", context column `{context}`" if context else "") + ").\n\n"
                   f"Licence: {license}.\n")
    return write_dataset(dataset_dir, candidates, license=license, pretty_name=name, source=source_text,
                         source_sha256=sha256_file(path), command=command, description=description,
                         cleaning={"rows_read": len(frame)})
