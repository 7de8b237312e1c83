"""The data gate: schema, sha256 against the card, duplicates, PII and train/eval overlap.

    llmops data check                      # every dataset under datasets/
    llmops data check python-faq --out .llmops/reports/data-check

`check_dataset(path)` returns one llmops.report.Check per check, each finding naming the file, line
and field, so that the PR gate can run it on the datasets a change touched. Unreadable input (a
missing or broken card, bad JSON) raises InputError (exit 2); failed checks fail the report (exit 1).

Near duplicates: word 3-gram shingles of the normalised question + answer, MinHash signatures
(128 hashes) bucketed by LSH (32 bands of 4), and every candidate pair verified with the exact
Jaccard similarity, so a reported pair really is >= the threshold. A pair at Jaccard 0.8 becomes a
candidate with probability 1 - (1 - 0.8**4)**32 > 0.99999; thousands of rows take well under a second.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance.licenses import check_dataset_license
from governance.pii import find_pii, mask
from llmops.dataset import CARD_FILE, TRAIN_FILE, DatasetCard, load_card, read_jsonl, validate_row
from llmops.errors import InputError
from llmops.files import sha256_file
from llmops.report import Check, Finding, Report

NEAR_DUPLICATE_JACCARD = 0.8
TEXT_FIELDS = ("question", "answer", "context")

_NUM_HASHES, _BANDS = 128, 32  # 32 bands * 4 rows = 128 hashes
_MERSENNE = (1 << 61) - 1
# A word, or a run of symbols other than sentence punctuation and quotes/brackets.
_TOKEN = re.compile(r"\w+|[^\w\s.,;:!?'\"()\[\]{}\u2018\u2019\u201c\u201d]+")


# --- text similarity (also used by data/split.py to keep near duplicates on one split side) ------------

def normalise_text(text: str) -> str:
    """Casefolded NFKC tokens: sentence punctuation and whitespace differences do not make rows
    distinct, but symbols that carry meaning do ("C" and "C++" are different questions)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_TOKEN.findall(text))


@functools.lru_cache(maxsize=200_000)  # the overlap check sees the training rows a second time
def shingles(text: str, size: int = 3) -> frozenset[int]:
    """crc32 hashes of the word `size`-grams of normalised `text` (the whole text when shorter)."""
    words = normalise_text(text).split()
    grams = [" ".join(words[i:i + size]) for i in range(max(1, len(words) - size + 1))]
    return frozenset(zlib.crc32(g.encode("utf-8")) for g in grams)


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicate_pairs(texts: Sequence[str], threshold: float = NEAR_DUPLICATE_JACCARD,
                         ) -> list[tuple[int, int, float]]:
    """[(i, j, jaccard)] with i < j for every pair of `texts` whose shingle Jaccard is >= threshold."""
    import numpy as np

    sets = [shingles(t) for t in texts]
    rng = np.random.default_rng(20240601)  # fixed: the same candidates on every run
    # a < 2**31 and x < 2**32 keep a*x + b below 2**64, so uint64 arithmetic does not wrap.
    a = rng.integers(1, 1 << 31, size=(_NUM_HASHES, 1), dtype=np.uint64)
    b = rng.integers(0, 1 << 31, size=(_NUM_HASHES, 1), dtype=np.uint64)
    signatures = np.empty((len(sets), _NUM_HASHES), dtype=np.uint64)  # (rows, 128)
    for index, shingle_set in enumerate(sets):
        x = np.fromiter(shingle_set, dtype=np.uint64, count=len(shingle_set))[None, :]
        signatures[index] = ((a * x + b) % _MERSENNE).min(axis=1)
    rows_per_band = _NUM_HASHES // _BANDS
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for band in range(_BANDS):
        chunk = np.ascontiguousarray(signatures[:, band * rows_per_band:(band + 1) * rows_per_band])
        for index, key in enumerate(chunk.view(f"V{chunk.shape[1] * 8}").ravel().tolist()):
            buckets[(band, key)].append(index)
    candidates = {(i, j) for members in buckets.values() if len(members) > 1
                  for k, i in enumerate(members) for j in members[k + 1:]}
    pairs = []
    for i, j in sorted(candidates):
        score = jaccard(sets[i], sets[j])
        if score >= threshold:
            pairs.append((i, j, score))
    return pairs


# --- loading -----------------------------------------------------------------------------------------

@dataclass
class DataFile:
    """One JSONL file of a dataset, read once and shared by every check."""

    name: str  # file name inside the dataset folder
    path: Path
    display: str  # the path findings show (repo-relative when possible)
    records: list[tuple[int, Any]]  # (line number, parsed JSON)

    @property
    def is_train(self) -> bool:
        return self.name == TRAIN_FILE


def _text(record: Any, field: str) -> str:
    value = record.get(field) if isinstance(record, dict) else None
    return value if isinstance(value, str) else ""


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def load_dataset_files(dataset_dir: Path, card: DatasetCard, root: Path | None) -> list[DataFile]:
    """Every file the card lists plus any *.jsonl beside it, parsed (InputError on bad JSON)."""
    # train first, so a duplicate id is reported in the held-out file that repeats it
    names = sorted({*card.files, *(p.name for p in dataset_dir.glob("*.jsonl"))},
                   key=lambda n: (n != TRAIN_FILE, n))
    files = []
    for name in names:
        path = dataset_dir / name
        if path.is_file():
            files.append(DataFile(name, path, _display(path, root), list(read_jsonl(path))))
    return files


# --- the checks --------------------------------------------------------------------------------------

def check_schema(files: list[DataFile]) -> list[Finding]:
    findings = []
    first_seen: dict[str, str] = {}
    for f in files:
        for line, record in f.records:
            for field, message in validate_row(record):
                findings.append(Finding(message, file=f.display, line=line, field=field or None))
            row_id = record.get("id") if isinstance(record, dict) else None
            if isinstance(row_id, str):
                where = f"{f.display}:{line}"
                if row_id in first_seen:
                    findings.append(Finding(f"duplicate id {row_id!r}, first at {first_seen[row_id]}",
                                            file=f.display, line=line, field="id"))
                else:
                    first_seen[row_id] = where
    return findings


def check_checksums(dataset_dir: Path, card: DatasetCard, files: list[DataFile], root: Path | None,
                    ) -> list[Finding]:
    """Each file's sha256 and row count must equal the card's; unlisted or missing files fail."""
    findings = []
    card_display = _display(dataset_dir / CARD_FILE, root)
    present = {f.name: f for f in files}
    if not card.files:
        findings.append(Finding("the card lists no files (llmops.files is empty): nothing is vouched for",
                                file=card_display, field="llmops.files"))
    if not files:
        findings.append(Finding("the dataset has no data files", file=card_display, field="llmops.files"))
    for name, entry in card.files.items():
        if name not in present:
            findings.append(Finding(f"card lists {name} but the file is missing", file=card_display,
                                    field=f"llmops.files.{name}"))
            continue
        f = present[name]
        actual = sha256_file(f.path)
        if actual != entry.sha256:
            findings.append(Finding(
                f"sha256 {actual[:12]}… does not match the card's {entry.sha256[:12]}…; the file changed "
                "without re-running ingest (or update the card on purpose)", file=f.display, field="sha256"))
        if len(f.records) != entry.rows:
            findings.append(Finding(f"{len(f.records)} rows but the card says {entry.rows}",
                                    file=f.display, field="rows"))
    for name in sorted(set(present) - set(card.files)):
        findings.append(Finding(f"{name} is not listed in the card, so nothing vouches for it",
                                file=present[name].display, field="sha256"))
    return findings


def _exact_key(record: Any) -> str:
    return "\x1f".join(normalise_text(_text(record, k)) for k in ("question", "context"))


def _near_text(record: Any) -> str:
    return _text(record, "question") + " " + _text(record, "answer")


def check_duplicates(files: list[DataFile]) -> list[Finding]:
    """Within each file: identical rows and near duplicates fail; one question with two answers warns."""
    findings = []
    for f in files:
        seen: dict[str, tuple[int, str]] = {}
        exact_lines: set[int] = set()
        for line, record in f.records:
            if not isinstance(record, dict):
                continue
            key = _exact_key(record)
            answer = normalise_text(_text(record, "answer"))
            if not key.strip("\x1f"):
                continue
            if key in seen:
                first_line, first_answer = seen[key]
                if first_answer == answer:
                    exact_lines.add(line)
                    findings.append(Finding(f"exact duplicate of line {first_line}", file=f.display,
                                            line=line, field="question"))
                else:
                    findings.append(Finding(f"same question as line {first_line} with a different answer",
                                            file=f.display, line=line, field="answer", severity="warning"))
            else:
                seen[key] = (line, answer)
        rows = [(line, r) for line, r in f.records if isinstance(r, dict)]
        for i, j, score in near_duplicate_pairs([_near_text(r) for _, r in rows]):
            if rows[j][0] in exact_lines:
                continue
            findings.append(Finding(f"near duplicate of line {rows[i][0]} (Jaccard {score:.2f} >= "
                                    f"{NEAR_DUPLICATE_JACCARD})", file=f.display, line=rows[j][0],
                                    field="question+answer"))
    return findings


def check_pii(files: list[DataFile]) -> list[Finding]:
    """PII and secrets in question/answer/context; reserved example values (example.com, 127.0.0.1,
    192.0.2.0/24) are allowed, see governance.pii. The match itself is masked in the finding."""
    findings = []
    for f in files:
        for line, record in f.records:
            for field in TEXT_FIELDS:
                for match in find_pii(_text(record, field), allow_reserved=True):
                    findings.append(Finding(f"{match.kind} at characters {match.start}-{match.end}: "
                                            f"{mask(match.text)}", file=f.display, line=line, field=field))
    return findings


def check_overlap(files: list[DataFile]) -> list[Finding]:
    """No held-out row may repeat a training question exactly or nearly (it would leak the answer)."""
    train = [f for f in files if f.is_train]
    held_out = [f for f in files if not f.is_train]
    findings = []
    if not train or not held_out:
        # Inconclusive, and said so: a dataset without both splits has nothing to compare here.
        missing = "a train split" if not train else "a held-out split"
        return [Finding(f"not checked: the dataset has no {missing}", severity="warning")]
    train_rows = [(f, line, r) for f in train for line, r in f.records if isinstance(r, dict)]
    exact = {}
    for f, line, record in train_rows:
        exact.setdefault(_exact_key(record), (f, line))
    for f in held_out:
        rows = [(line, r) for line, r in f.records if isinstance(r, dict)]
        exact_hits = set()
        for line, record in rows:
            key = _exact_key(record)
            if key.strip("\x1f") and key in exact:
                tf, tline = exact[key]
                exact_hits.add(line)
                findings.append(Finding(f"question also in {tf.display}:{tline} (exact train/eval overlap)",
                                        file=f.display, line=line, field="question"))
        texts = [_near_text(r) for _, _, r in train_rows] + [_near_text(r) for _, r in rows]
        n_train = len(train_rows)
        reported = set()
        for i, j, score in near_duplicate_pairs(texts):
            if i >= n_train or j < n_train:
                continue  # a pair inside one side is the duplicates check's business
            line = rows[j - n_train][0]
            if line in exact_hits or line in reported:
                continue
            reported.add(line)
            tf, tline, _ = train_rows[i]
            findings.append(Finding(f"near duplicate of {tf.display}:{tline} (Jaccard {score:.2f}; "
                                    "near train/eval overlap)", file=f.display, line=line,
                                    field="question+answer"))
    return findings


EVAL_MATERIAL = ("evals/cases", "evals/safety")  # what the gates score: training must not see it


def eval_material_texts(root: Path) -> list[tuple[str, int | None, str]]:
    """(file, line, text) of every question, context and attack prompt in the eval cases and safety sets."""
    import yaml

    out: list[tuple[str, int | None, str]] = []

    def walk(node: yaml.Node, display: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value in ("question", "context", "prompt") and isinstance(value, yaml.ScalarNode):
                    out.append((display, value.start_mark.line + 1, str(value.value)))
                else:
                    walk(value, display)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, display)

    for folder in EVAL_MATERIAL:
        for path in sorted((Path(root) / folder).rglob("*.yaml")):
            try:
                node = yaml.compose(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise InputError(f"invalid YAML: {exc}", file=str(path)) from None
            if node is not None:
                walk(node, _display(path, root))
    return out


def check_eval_overlap(files: list[DataFile], root: Path | None) -> list[Finding]:
    """No training question or context may equal or nearly repeat an eval case or safety item:
    a model trained on what the gates ask would pass them without having learnt the behaviour."""
    if root is None or not any((Path(root) / f).is_dir() for f in EVAL_MATERIAL):
        return [Finding("no eval cases found to compare with (evals/cases, evals/safety): overlap not checked",
                        severity="warning")]
    material = [m for m in eval_material_texts(Path(root)) if normalise_text(m[2])]
    train = [(f, line, field, _text(r, field)) for f in files if f.is_train for line, r in f.records
             if isinstance(r, dict) for field in ("question", "context") if normalise_text(_text(r, field))]
    exact = {normalise_text(text): (file, line) for file, line, text in material}
    findings = []
    flagged = set()
    for f, line, field, text in train:
        hit = exact.get(normalise_text(text))
        if hit:
            flagged.add((f.display, line))
            findings.append(Finding(f"{field} equals the eval material at {hit[0]}:{hit[1]}", file=f.display,
                                    line=line, field=field))
    texts = [t for *_, t in train] + [m[2] for m in material]
    for i, j, score in near_duplicate_pairs(texts):
        if i >= len(train) or j < len(train):
            continue
        f, line, field, _ = train[i]
        if (f.display, line) in flagged:
            continue
        flagged.add((f.display, line))
        file, mline, _ = material[j - len(train)]
        findings.append(Finding(f"{field} nearly repeats the eval material at {file}:{mline} (Jaccard {score:.2f})",
                                file=f.display, line=line, field=field))
    return findings


def _license_findings(dataset_dir: Path, root: Path | None) -> list[Finding]:
    findings = check_dataset_license(dataset_dir)
    for f in findings:
        if f.file:
            f.file = _display(Path(f.file), root)
    return findings


def check_dataset(path: Path | str, *, root: Path | None = None) -> list[Check]:
    """Run every data check on one dataset folder. Check names are `data:<name>:<check>`."""
    dataset_dir = Path(path)
    if not dataset_dir.is_dir():
        raise InputError("dataset folder not found", file=str(dataset_dir))
    card = load_card(dataset_dir)
    files = load_dataset_files(dataset_dir, card, root)
    name = dataset_dir.name
    rows = sum(len(f.records) for f in files)
    runs = [
        ("schema", check_schema(files), f"{rows} rows in {len(files)} files"),
        ("sha256", check_checksums(dataset_dir, card, files, root), f"{len(card.files)} files in the card"),
        ("duplicates", check_duplicates(files), f"exact and near (Jaccard >= {NEAR_DUPLICATE_JACCARD})"),
        ("pii", check_pii(files), "email, phone, credit card, IBAN, API key, IP in " + "/".join(TEXT_FIELDS)),
        ("overlap", check_overlap(files), "train vs held-out files, exact and near"),
        ("eval-overlap", check_eval_overlap(files, root), "train vs evals/cases and evals/safety, exact and near"),
        ("license", _license_findings(dataset_dir, root), "card licence against governance/licenses.yaml"),
    ]
    checks = []
    for check_name, findings, summary in runs:
        failed = any(f.severity == "error" for f in findings)
        checks.append(Check(name=f"data:{name}:{check_name}", passed=not failed, findings=findings,
                            summary=summary))
    return checks


def discover_datasets(datasets_dir: Path) -> list[Path]:
    """Folders under datasets/ with a card or any JSONL file (JSONL without a card is an input error)."""
    if not datasets_dir.is_dir():
        return []
    return sorted(p for p in datasets_dir.iterdir()
                  if p.is_dir() and ((p / CARD_FILE).is_file() or any(p.glob("*.jsonl"))))


def resolve_datasets(names: Iterable[str], datasets_dir: Path) -> list[Path]:
    """A dataset argument is a folder name under datasets/ or a path to a dataset folder."""
    out = []
    for name in names:
        for candidate in (datasets_dir / name, Path(name)):
            if candidate.is_dir():
                out.append(candidate)
                break
        else:
            raise InputError(f"no dataset folder {name!r} (looked in {datasets_dir} and the current folder)")
    return out


def run_data_check(dataset_dirs: list[Path], *, root: Path | None = None) -> Report:
    report = Report(kind="data-check")
    for dataset_dir in dataset_dirs:
        report.checks.extend(check_dataset(dataset_dir, root=root))
    report.info["datasets"] = [_display(d, root) for d in dataset_dirs]
    return report


def format_summary(report: Report, limit: int = 100) -> str:
    """The stdout summary: one line a check, then the findings (first `limit`)."""
    lines = []
    for check in report.checks:
        errors = sum(f.severity == "error" for f in check.findings)
        warnings = len(check.findings) - errors
        mark = "PASS" if check.passed else "FAIL"
        lines.append(f"{mark} {check.name}: {errors} errors, {warnings} warnings ({check.summary})")
    findings = [(c.name, f) for c in report.checks for f in c.findings]
    for _, f in findings[:limit]:
        lines.append(f"  {f.severity}: {f.where()}: {f.message}")
    if len(findings) > limit:
        lines.append(f"  ... {len(findings) - limit} more in report.md")
    lines.append(f"data check: {report.verdict.upper()}")
    return "\n".join(lines)
