"""Data commands: ingest datasets and run the data gate.

    llmops data ingest python-faq
    llmops data ingest file faq.parquet --name team-faq --question q --answer a --license MIT
    llmops data check
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from llmops.errors import GateFailed


@click.group()
def data() -> None:
    """Versioned datasets in datasets/<name>/: ingest them and check them."""


@data.group()
def ingest() -> None:
    """Write datasets/<name>/train.jsonl, eval.jsonl and the README.md dataset card."""


def _report_ingest(result) -> None:
    card = result.card
    click.echo(f"wrote {result.dataset_dir}: {result.rows} rows "
               f"({result.train_rows} train, {result.eval_rows} eval), licence {card.license}")
    for name, entry in card.files.items():
        click.echo(f"  {name}: {entry.rows} rows, sha256 {entry.sha256}")
    dropped = result.dropped.get("dropped_exact_duplicates", 0)
    if dropped:
        click.echo(f"  dropped {dropped} exact duplicate rows")


@ingest.command("python-faq")
@click.option("--source", "source_dir", type=click.Path(path_type=Path), default=None,
              help="Folder with the FAQ *.html pages (default: /usr/share/doc/python3.11/html/faq "
                   "from Debian's python3.11-doc).")
def ingest_python_faq_cmd(source_dir: Path | None) -> None:
    """Question/answer pairs from the Python 3.11 FAQ HTML into datasets/python-faq/ (PSF-2.0)."""
    from data.ingest import ingest_python_faq
    from llmops.settings import Settings

    argv = ["llmops", "data", "ingest", "python-faq"]
    if source_dir is not None:
        argv += ["--source", str(source_dir)]
    dataset_dir = Settings.load().datasets_dir / "python-faq"
    _report_ingest(ingest_python_faq(dataset_dir, source_dir=source_dir, command=shlex.join(argv)))


@ingest.command("file")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Dataset name: the folder datasets/NAME/.")
@click.option("--question", required=True, metavar="COL", help="Column holding the question.")
@click.option("--answer", required=True, metavar="COL", help="Column holding the answer.")
@click.option("--context", default=None, metavar="COL", help="Optional column with a grounding passage.")
@click.option("--id", "id_column", default=None, metavar="COL",
              help="Column with stable unique ids (default: NAME- plus a hash of question and context).")
@click.option("--group", default=None, metavar="COL",
              help="Column whose equal values must stay on one side of the train/eval split.")
@click.option("--license", "license_", required=True, metavar="SPDX", help="SPDX licence id, e.g. CC-BY-4.0.")
@click.option("--source", default=None, metavar="TEXT", help="Where the data comes from (default: PATH).")
def ingest_file_cmd(path: Path, name: str, question: str, answer: str, context: str | None,
                    id_column: str | None, group: str | None, license_: str, source: str | None) -> None:
    """A team's own CSV, JSON, JSONL or Parquet file, with a column mapping, into datasets/NAME/."""
    from data.clean import slugify
    from data.ingest import ingest_table
    from llmops.errors import InputError
    from llmops.settings import Settings

    if slugify(name) != name:
        raise InputError(f"dataset name must be lowercase letters, digits and dashes, e.g. {slugify(name)!r}",
                         field="--name")
    argv = ["llmops", "data", "ingest", "file", str(path), "--name", name, "--question", question,
            "--answer", answer]
    for flag, value in (("--context", context), ("--id", id_column), ("--group", group)):
        if value is not None:
            argv += [flag, value]
    argv += ["--license", license_]
    if source is not None:
        argv += ["--source", source]
    dataset_dir = Settings.load().datasets_dir / name
    _report_ingest(ingest_table(path, dataset_dir, question=question, answer=answer, context=context,
                                id_column=id_column, group=group, license=license_, source=source,
                                command=shlex.join(argv)))


@data.command("check")
@click.argument("datasets", nargs=-1)
@click.option("--training-config", "training_config", type=click.Path(path_type=Path), default=None,
              help="Check the datasets this training config trains on (`dataset` and `extra_datasets`), "
                   "e.g. training/config.yaml; instead of DATASETS.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where report.json and report.md go (default: .llmops/reports/data-check).")
def check(datasets: tuple[str, ...], training_config: Path | None, out_dir: Path | None) -> None:
    """Check DATASETS (names under datasets/ or folders; default: all) for schema, sha256 against the
    card, exact/near duplicates, PII and train/eval overlap. Exit 1 on a failed check, 2 on bad input."""
    from governance.datacheck import discover_datasets, format_summary, resolve_datasets, run_data_check
    from llmops.errors import InputError
    from llmops.settings import Settings

    settings = Settings.load()
    if training_config is not None:
        if datasets:
            raise InputError("give DATASETS or --training-config, not both", field="--training-config")
        from training.config import load_config

        cfg = load_config(training_config)
        datasets = tuple(str(settings.root / d) for d in (cfg.dataset, *cfg.extra_datasets))
    if datasets:
        dirs = resolve_datasets(datasets, settings.datasets_dir)
    else:
        dirs = discover_datasets(settings.datasets_dir)
        if not dirs:
            raise InputError("no datasets found (a folder with a README.md card)", file=str(settings.datasets_dir))
    report = run_data_check(dirs, root=settings.root)
    out = out_dir or settings.home / "reports" / "data-check"
    json_path, md_path = report.write(out)
    click.echo(format_summary(report))
    click.echo(f"report: {json_path} {md_path}")
    if not report.passed:
        failed = [c.name for c in report.checks if not c.passed]
        raise GateFailed(f"data check failed: {', '.join(failed)}")
