"""The one dataset-card builder, of `llmops data ingest` and `llmops feedback export`.

    llmops data ingest python-faq
    llmops feedback export

`card_for` makes the README.md card of the files already written in a dataset folder: each file's
sha256 is read from disk, so the card describes exactly what is there (write the files first, the
card last). The card's schema, parsing and rendering are the core's (llmops/dataset.py:
DatasetCard, load_card, render_card, write_card); `llmops data check` verifies the sha256s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops.dataset import CardLineage, DatasetCard, FileEntry, load_card, size_category
from llmops.errors import InputError
from llmops.files import sha256_file


def card_for(dataset_dir: Path, rows: dict[str, int], *, license: str, pretty_name: str, source: str,
             command: str, description: str, task_categories: list[str], created: str,
             source_sha256: str | None = None, split: dict[str, Any] | None = None,
             cleaning: dict[str, Any] | None = None, size_rows: int | None = None,
             name: str | None = None) -> DatasetCard:
    """The card of the files already written in `dataset_dir` (`rows`: file name -> row count), with
    each file's sha256 read from disk; `name` defaults to the folder's. The one card builder of
    ingestion and the feedback export."""
    files = {name: FileEntry(sha256=sha256_file(Path(dataset_dir) / name), rows=n) for name, n in rows.items()}
    return DatasetCard(
        license=license, pretty_name=pretty_name, language=["en"],
        size_categories=[size_category(sum(rows.values()) if size_rows is None else size_rows)],
        task_categories=task_categories, description=description,
        llmops=CardLineage(name=name or Path(dataset_dir).name, source=source, source_sha256=source_sha256,
                           command=command, created=created, split=split or {}, cleaning=cleaning or {},
                           files=files))


def keep_previous_date(dataset_dir: Path, card: DatasetCard) -> DatasetCard:
    """`card` with the date of the card already in `dataset_dir` when the files' sha256s did not change
    (same content: the card does not churn on re-ingest); unchanged when there is no readable card."""
    try:
        previous = load_card(dataset_dir)
        if previous.files == card.files:
            card.llmops.created = previous.created
    except InputError:
        pass
    return card
