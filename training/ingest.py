"""Ingest question/answer data into `datasets/<name>/` (train.jsonl, eval.jsonl, README.md card).

    llmops data ingest python-faq
    llmops data ingest file faq.csv --name team-faq --question q --answer a --license CC-BY-4.0

Both paths share the cleaning, the split and the card:
- cleaning: Unicode NFKC, control and zero-width characters removed, prose whitespace collapsed,
  code blocks kept with their line breaks and indentation, HTML turned into text (no tags or
  entities left), rows identical after cleaning dropped (counted in the card);
- split: rows are grouped (FAQ section or page; a `--group` column for files), groups that share a
  question or hold near-duplicate rows are merged, so related questions stay on one side; groups
  are ordered by sha256 of their key and taken into eval in that order until eval holds
  ceil(15%) of the rows (a group that would push eval past 130% of that is left in train). The order depends only
  on the keys, so re-ingesting the same input gives byte-identical files;
- card: the date is kept from the previous card when the files' sha256 did not change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import math
import os
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmops.dataset import (
    EVAL_FILE,
    SPDX_PATTERN,
    TRAIN_FILE,
    DatasetCard,
    DatasetRow,
    card_for,
    load_card,
    write_card,
    write_jsonl,
)
from llmops.errors import InputError
from llmops.files import sha256_bytes, sha256_file

PYTHON_FAQ_DIR = Path("/usr/share/doc/python3.11/html/faq")
PYTHON_FAQ_URL = "https://docs.python.org/3.11/faq/"
PYTHON_FAQ_PACKAGE = "python3.11-doc"
EVAL_FRACTION = 0.15
EVAL_OVERSHOOT = 1.3  # a group that would take eval past 130% of its target is left in train

# --- cleaning ----------------------------------------------------------------------------------------

_BLOCK_TAGS = {"p", "div", "pre", "ul", "ol", "dl", "dt", "dd", "li", "table", "blockquote", "section",
               "figure", "h1", "h2", "h3", "h4", "h5", "h6", "br", "hr"}
_LOOKS_LIKE_HTML = re.compile(r"<(?:p|div|br|span|a|code|pre|ul|ol|li|b|i|em|strong|table|h[1-6])\b[^>]*>"
                              r"|&(?:amp|lt|gt|quot|nbsp|#\d+);", re.IGNORECASE)


def _drop_invisible(text: str) -> str:
    """Remove control (Cc, except newline and tab) and format (Cf: zero-width, BOM, soft hyphen) chars."""
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf"))


def clean_prose(text: str) -> str:
    """NFKC, invisible characters removed, every run of whitespace (newlines too) made one space."""
    text = _drop_invisible(unicodedata.normalize("NFKC", text))
    return " ".join(text.split())


def clean_code(text: str) -> str:
    """NFKC and invisible characters removed; line breaks and indentation kept, trailing spaces cut."""
    text = _drop_invisible(unicodedata.normalize("NFKC", text.replace("\r\n", "\n")))
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n")


def clean_multiline(text: str) -> str:
    """For a team's cells: HTML turned into text, paragraphs kept, 3+ blank lines made one."""
    if _LOOKS_LIKE_HTML.search(text):
        return html_fragment_to_text(text)
    text = clean_code(text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _has_block_descendant(el: Any) -> bool:
    return any(isinstance(d.tag, str) and d.tag in _BLOCK_TAGS for d in el.iterdescendants())


def _element_blocks(el: Any) -> list[str]:
    """Text blocks of one element: a paragraph, a code block, a list or a table each become one block."""
    tag = el.tag
    if tag in ("script", "style"):
        return []
    if tag == "pre":
        code = clean_code(el.text_content())
        return [code] if code else []
    if tag in ("ul", "ol"):
        items = []
        for number, li in enumerate(el.iterchildren("li"), start=1):
            parts = _children_blocks(li)
            if parts:
                marker = "-" if tag == "ul" else f"{number}."
                items.append(f"{marker} " + "\n".join(parts))
        return ["\n".join(items)] if items else []
    if tag == "table":
        rows = [" | ".join(clean_prose(cell.text_content()) for cell in tr.iterchildren("th", "td"))
                for tr in el.iter("tr")]
        rows = [r for r in rows if r.strip(" |")]
        return ["\n".join(rows)] if rows else []
    return _children_blocks(el)


def _children_blocks(el: Any) -> list[str]:
    """Blocks of an element's content; loose inline text between blocks becomes its own paragraph."""
    if not _has_block_descendant(el):
        text = clean_prose(el.text_content())
        return [text] if text else []
    out: list[str] = []
    inline: list[str] = [el.text or ""]

    def flush() -> None:
        text = clean_prose("".join(inline))
        inline.clear()
        if text:
            out.append(text)

    for child in el:
        if isinstance(child.tag, str):
            if child.tag in _BLOCK_TAGS or _has_block_descendant(child):
                flush()
                out.extend(_element_blocks(child))
            else:
                inline.append(child.text_content())
        inline.append(child.tail or "")
    flush()
    return out


def blocks_to_text(blocks: Iterable[str]) -> str:
    return "\n\n".join(b for b in blocks if b)


def html_fragment_to_text(fragment: str) -> str:
    import lxml.html

    root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    text = blocks_to_text(_element_blocks(root))
    return html.unescape(text) if "&" in text else text  # double-escaped entities in exported cells


def slugify(text: str, max_length: int = 80) -> str:
    text = text.replace("+", " plus ")  # "C++" must not collide with "C"
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "row"


# --- rows, split and card (shared by both ingest paths) ------------------------------------------------

@dataclass
class Candidate:
    row: DatasetRow
    group: str  # rows with the same group always land on the same side of the split


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


def _drop_exact_duplicates(candidates: list[Candidate]) -> tuple[list[Candidate], int]:
    from governance.datacheck import normalise_text

    seen: set[tuple[str, str, str]] = set()
    kept = []
    for c in candidates:
        key = (normalise_text(c.row.question), normalise_text(c.row.context or ""),
               normalise_text(c.row.answer))
        if key not in seen:
            seen.add(key)
            kept.append(c)
    return kept, len(candidates) - len(kept)


def _merge_related_groups(candidates: list[Candidate]) -> dict[str, str]:
    """Union-find over groups: the same question or a near-duplicate pair joins two groups.

    Returns {group: representative}; the representative is the smallest key, so it is deterministic.
    """
    from governance.datacheck import near_duplicate_pairs, normalise_text

    parent = {c.group: c.group for c in candidates}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_question: dict[str, str] = {}
    for c in candidates:
        key = normalise_text(c.row.question) + "\x1f" + normalise_text(c.row.context or "")
        union(by_question.setdefault(key, c.group), c.group)
    texts = [c.row.question + " " + c.row.answer for c in candidates]
    for i, j, _ in near_duplicate_pairs(texts):
        union(candidates[i].group, candidates[j].group)
    return {g: find(g) for g in parent}


def split_candidates(candidates: list[Candidate], eval_fraction: float = EVAL_FRACTION,
                     ) -> tuple[list[DatasetRow], list[DatasetRow], dict[str, Any]]:
    """Deterministic group split; rows keep their input order inside each file."""
    if len(candidates) < 2:
        raise InputError(f"need at least 2 rows to make a train and an eval split, got {len(candidates)}")
    merged = _merge_related_groups(candidates)
    sizes: dict[str, int] = {}
    for c in candidates:
        sizes[merged[c.group]] = sizes.get(merged[c.group], 0) + 1
    if len(sizes) < 2:
        raise InputError("every row is in one group (or they are all related), so no eval split can be "
                         "held out; pass a --group column with more than one value")
    order = sorted(sizes, key=lambda g: hashlib.sha256(g.encode("utf-8")).hexdigest())
    total = len(candidates)
    target = max(1, math.ceil(eval_fraction * total))
    cap = math.ceil(target * EVAL_OVERSHOOT)
    eval_groups: set[str] = set()
    eval_rows = 0
    for g in order:
        if eval_rows >= target:
            break
        if eval_rows + sizes[g] <= cap:
            eval_groups.add(g)
            eval_rows += sizes[g]
    if not eval_groups:  # every group is larger than the cap: hold out the smallest one
        smallest = min(order, key=lambda g: sizes[g])
        eval_groups.add(smallest)
    train = [c.row for c in candidates if merged[c.group] not in eval_groups]
    held_out = [c.row for c in candidates if merged[c.group] in eval_groups]
    info = {
        "method": "group hash order (sha256 of the group key), related groups merged",
        "eval_fraction_target": eval_fraction,
        "groups": len(sizes),
        "eval_groups": len(eval_groups),
    }
    return train, held_out, info


def write_dataset(dataset_dir: Path, candidates: list[Candidate], *, license: str, pretty_name: str,
                  source: str, source_sha256: str | None, command: str, description: str,
                  cleaning: dict[str, Any]) -> IngestResult:
    """Split, write train/eval atomically, then the card (the card last, so its sha256s describe them)."""
    if not SPDX_PATTERN.match(license):
        raise InputError(f"not an SPDX licence id: {license!r} (e.g. PSF-2.0, MIT, CC-BY-4.0)", field="license")
    candidates, duplicates = _drop_exact_duplicates(candidates)
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
    try:
        previous = load_card(dataset_dir)
        if previous.files == card.files:
            card.llmops.created = previous.created  # same content: keep the date so the card does not churn
    except InputError:
        pass
    write_card(dataset_dir, card)
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
                                for b in _element_blocks(child))
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
