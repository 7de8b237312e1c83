"""Feedback commands: list rated answers and export them as a candidate dataset for a pull request.

    llmops feedback list --last 20
    llmops feedback export                     # -> datasets/feedback-<date>/ ; exit 1 if it fails the data checks
    llmops feedback export --since 2026-11-01 --name feedback-nov --out reports/feedback-export
"""

from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path
from typing import Any

import click

from llmops.errors import GateFailed


@click.group()
def feedback() -> None:
    """Thumbs up/down from the chat page (<home>/feedback/feedback.jsonl)."""


def _store_path(store: Path | None) -> Path:
    from llmops.settings import Settings
    from serving.feedback import FEEDBACK_FILE

    return store or Settings.load().home / FEEDBACK_FILE


def _load_entries(path: Path) -> list[dict[str, Any]]:
    """Every entry of the serving side's feedback store (data/feedback.py never imports serving)."""
    from llmops.errors import InputError
    from serving.feedback import FeedbackStore

    if not Path(path).is_file():
        raise InputError("no feedback store yet", file=str(path))
    return list(FeedbackStore(path).read())


@feedback.command("list")
@click.option("--store", type=click.Path(path_type=Path), default=None, help="Feedback file (default: the home's).")
@click.option("--last", default=20, show_default=True, help="How many of the newest entries to show.")
def list_cmd(store: Path | None, last: int) -> None:
    """Counts per rating, then the newest entries (prompt cut to 60 characters)."""
    entries = _load_entries(_store_path(store))
    ups = sum(e.get("rating") == "up" for e in entries)
    click.echo(f"{len(entries)} entries: {ups} up, {len(entries) - ups} down")
    for e in entries[-last:]:
        prompt = str(e.get("prompt", "")).replace("\n", " ")[:60]
        click.echo(f"{e.get('created', '')}  {e.get('rating', '?'):4}  {e.get('model', '')}/{e.get('colour') or '-'}"
                   f"  {e.get('id', '')[:12]}  {prompt}")


@feedback.command("export")
@click.option("--store", type=click.Path(path_type=Path), default=None, help="Feedback file (default: the home's).")
@click.option("--name", default=None, help="Dataset folder name (default: feedback-<today>).")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="Only entries from this day on.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports/feedback-export"),
              show_default=True, help="Folder for report.json and report.md.")
def export_cmd(store: Path | None, name: str | None, since: dt.datetime | None, out_dir: Path) -> None:
    """Well-rated answers -> datasets/<name>/train.jsonl (+ card); the rest -> review/review.jsonl."""
    from data.feedback import export_feedback
    from llmops.settings import Settings

    argv = ["llmops", "feedback", "export"]
    if name:
        argv += ["--name", name]
    if since:
        argv += ["--since", since.date().isoformat()]
    command = shlex.join(argv)
    result = export_feedback(_load_entries(_store_path(store)), Settings.load().datasets_dir, name=name,
                             since=since.date() if since else None, command=command)
    report = result.report
    report.write(out_dir)
    click.echo(f"{len(result.train_rows)} training rows, {len(result.review_items)} review items, "
               f"{len(result.rejected)} held back by the data checks, {result.skipped} skipped")
    for entry_id, findings in result.rejected:
        for f in findings:
            click.echo(f"  held back {entry_id[:12]}: {f.message}")
    if result.folder is not None:
        click.echo(f"wrote {result.folder}: open a pull request with it")
    elif report.passed:
        click.echo("nothing new to export")
    if not report.passed:
        raise GateFailed("the exported dataset failed the data checks; nothing was written")
