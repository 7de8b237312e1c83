"""Rated chat interactions -> a candidate dataset folder and a review file, through the data checks.

    llmops feedback export                       # -> datasets/feedback-<date>/, exit 1 if it fails the checks
    llmops feedback export --since 2026-11-01 --name feedback-nov

Thumbs-up entries become training rows (question = prompt, answer = response, source =
`feedback:<entry id>`, tags feedback/model/colour) in `datasets/feedback-<date>/train.jsonl` with a
dataset card. Thumbs-down entries become review items in `datasets/feedback-<date>/review/review.jsonl`
(not a dataset file: the data gate does not train on it) for a person to correct and promote.

Every candidate row goes through governance.datacheck's own checks before it is written: schema,
PII (check_pii), duplicates within the export (check_duplicates) and overlap with every held-out
file under datasets/ (check_overlap, so a user pasting an eval question cannot leak it into
training). A row with a finding is not written to train.jsonl; it goes to the review file with the
findings, so nothing is lost and nothing unsafe is proposed. Then check_dataset runs on the written
folder (sha256 against the card included), and the report says what happened. Entries already
exported (their id is a `feedback:<id>` source or review item in an existing datasets/feedback-*
folder) are skipped, so running the export twice proposes nothing twice. The folder is written in
a temp folder and renamed, so a failed export leaves nothing behind; open a PR with it.
The entries come from the serving side's feedback store (<home>/feedback/feedback.jsonl), read by the
command (llmops/cli/feedback.py): this stage meets serving through that file, never an import.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.cards import card_for
from governance.datacheck import DataFile, check_dataset, check_duplicates, check_overlap, check_pii
from governance.pii import find_pii
from llmops.dataset import EVAL_FILE, TRAIN_FILE, DatasetRow, read_jsonl, write_card
from llmops.errors import InputError
from llmops.files import atomic_dir, atomic_write_text
from llmops.report import Finding, Report

REVIEW_FILE = "review/review.jsonl"
LICENSE = "CC-BY-4.0"  # users' prompts with attribution to the service; allowed by governance/licenses.yaml


@dataclass
class ExportResult:
    folder: Path | None
    train_rows: list[DatasetRow] = field(default_factory=list)
    review_items: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[str, list[Finding]]] = field(default_factory=list)  # (entry id, findings)
    skipped: int = 0
    report: Report | None = None


def already_exported(datasets_dir: Path) -> set[str]:
    """Entry ids in datasets/feedback-*/ (train sources and review items)."""
    seen: set[str] = set()
    for folder in sorted(Path(datasets_dir).glob("feedback-*")):
        for path in (folder / TRAIN_FILE, folder / REVIEW_FILE):
            if path.is_file():
                for _, row in read_jsonl(path):
                    if not isinstance(row, dict):
                        continue
                    source = str(row.get("source", ""))
                    if source.startswith("feedback:"):
                        seen.add(source.removeprefix("feedback:"))
                    if row.get("feedback_id"):
                        seen.add(str(row["feedback_id"]))
    return seen


def _review_item(entry: dict[str, Any]) -> dict[str, Any]:
    """A thumbs-down entry for a reviewer; its text is withheld when it holds PII (it goes into a PR)."""
    item = {"feedback_id": entry["id"], "reason": "rated down",
            **{k: entry.get(k) for k in ("prompt", "response", "comment", "model", "colour", "created")}}
    for key in ("prompt", "response", "comment"):
        if isinstance(item[key], str) and find_pii(item[key], allow_reserved=True):
            item[key] = None
            item["reason"] += f"; {key} withheld (PII), see the feedback store"
    return item


def _row(entry: dict[str, Any]) -> DatasetRow:
    tags = ["feedback", f"model:{entry.get('model', 'unknown')}"[:64]]
    if entry.get("colour"):
        tags.append(f"colour:{entry['colour']}")
    return DatasetRow(id=f"feedback-{entry['id']}", question=entry["prompt"].strip(),
                      answer=entry["response"].strip(), source=f"feedback:{entry['id']}", tags=tags)


def _held_out_files(datasets_dir: Path) -> list[Any]:
    files = []
    for path in sorted(Path(datasets_dir).glob(f"*/{EVAL_FILE}")):
        files.append(DataFile(EVAL_FILE, path, str(path), list(read_jsonl(path))))
    return files


def screen_rows(rows: list[DatasetRow], datasets_dir: Path) -> dict[int, list[Finding]]:
    """{index in rows: findings} from the data checks (PII, duplicates, overlap with held-out files)."""
    candidate = DataFile(TRAIN_FILE, Path(TRAIN_FILE), "candidate/train.jsonl",
                         [(i + 1, json.loads(r.to_json_line())) for i, r in enumerate(rows)])
    findings = [*check_pii([candidate]), *check_duplicates([candidate]),
                *check_overlap([candidate, *_held_out_files(datasets_dir)])]
    by_row: dict[int, list[Finding]] = {}
    for f in findings:
        # check_overlap reports on the held-out line; map it back through the message's train line
        if f.file == candidate.display and f.line is not None and f.severity == "error":
            by_row.setdefault(f.line - 1, []).append(f)
        elif f.severity == "error" and "candidate/train.jsonl:" in f.message:
            line = int(f.message.split("candidate/train.jsonl:")[1].split()[0].rstrip(")"))
            by_row.setdefault(line - 1, []).append(f)
    return by_row


def export_feedback(entries: list[dict[str, Any]], datasets_dir: Path, *, name: str | None = None,
                    since: dt.date | None = None, command: str = "llmops feedback export",
                    today: dt.date | None = None) -> ExportResult:
    """Write datasets/<name>/ from rated entries; ExportResult.folder is None when nothing is new."""
    today = today or dt.datetime.now(dt.UTC).date()
    name = name or f"feedback-{today.isoformat()}"
    datasets_dir = Path(datasets_dir)
    folder = datasets_dir / name
    if folder.exists():
        raise InputError(f"{folder} already exists; pass --name for another folder", file=str(folder))
    seen = already_exported(datasets_dir)
    result = ExportResult(folder=None)
    ups: list[dict[str, Any]] = []
    for entry in entries:
        if entry.get("id") in seen or entry.get("rating") not in ("up", "down"):
            result.skipped += 1
            continue
        if since and str(entry.get("created", ""))[:10] < since.isoformat():
            result.skipped += 1
            continue
        if entry["rating"] == "up":
            ups.append(entry)
        else:
            result.review_items.append(_review_item(entry))
    rows = []
    for entry in ups:
        try:
            rows.append((entry, _row(entry)))
        except (ValueError, KeyError, TypeError) as exc:  # pydantic ValidationError is a ValueError
            result.rejected.append((str(entry.get("id")), [Finding(f"not a valid row: {exc}".splitlines()[0])]))
    flagged = screen_rows([r for _, r in rows], datasets_dir)
    for i, (entry, row) in enumerate(rows):
        if i in flagged:
            result.rejected.append((entry["id"], flagged[i]))
            result.review_items.append({"feedback_id": entry["id"], "reason": "failed data checks: " + "; ".join(
                f.message for f in flagged[i]), **{k: entry.get(k) for k in ("model", "colour", "created")}})
        else:
            result.train_rows.append(row)
    report = Report(kind="feedback-export")
    report.info.update({"dataset": name, "train_rows": len(result.train_rows),
                        "review_items": len(result.review_items), "skipped": result.skipped})
    report.add_check("feedback:screen", [Finding(f"entry {eid}: {f.message}", field=f.field, severity="warning")
                                         for eid, fs in result.rejected for f in fs],
                     f"{len(result.rejected)} of {len(ups)} well-rated entries held back for review")
    result.report = report
    if not result.train_rows and not result.review_items:
        return result
    with atomic_dir(folder) as tmp:
        atomic_write_text(tmp / TRAIN_FILE, "".join(r.to_json_line() for r in result.train_rows))
        # review items hold no PII-flagged text: a flagged row keeps only its id and findings
        atomic_write_text(tmp / REVIEW_FILE, "".join(json.dumps(i, ensure_ascii=False) + "\n"
                                                     for i in result.review_items))
        card = card_for(
            tmp, {TRAIN_FILE: len(result.train_rows)}, name=name, license=LICENSE,
            pretty_name=f"Rated chat answers ({name})", task_categories=["question-answering"],
            description=(f"Well-rated answers from the chat page, exported by `{command}`. Rows need a "
                         f"reviewer before they are merged; {len(result.review_items)} review items are "
                         f"in {REVIEW_FILE}."),
            source="feedback store (<home>/feedback/feedback.jsonl)", command=command, created=today.isoformat())
        write_card(tmp, card)
        checks = check_dataset(tmp)  # the gate's own checks on exactly what will be committed
    for check in checks:
        check.name = check.name.replace(f"data:{tmp.name}:", f"data:{name}:")
        report.checks.append(check)
    result.folder = folder
    if not report.passed:
        # never leave a folder the gate would reject (a check we did not screen for, e.g. schema)
        import shutil

        shutil.rmtree(folder)
        result.folder = None
    return result


__all__ = ["ExportResult", "already_exported", "export_feedback", "screen_rows"]
