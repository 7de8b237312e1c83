"""The train/eval split of `llmops data ingest` (python-faq and file): deterministic, by group.

    llmops data ingest python-faq
    llmops data ingest file faq.csv --name team-faq --question q --answer a --group topic --license MIT

Rows identical after cleaning are dropped first (the count goes into the card). Rows are grouped
(FAQ section or page; a `--group` column for files), and groups that share a question or hold
near-duplicate rows (governance.datacheck's similarity) are merged, so related questions stay on
one side. Groups are ordered by sha256 of their key and taken into eval in that order until eval
holds ceil(15%) of the rows (a group that would push eval past 130% of that is left in train). The
order depends only on the keys, so re-ingesting the same input gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from governance.datacheck import near_duplicate_pairs, normalise_text
from llmops.dataset import DatasetRow
from llmops.errors import InputError

EVAL_FRACTION = 0.15
EVAL_OVERSHOOT = 1.3  # a group that would take eval past 130% of its target is left in train


@dataclass
class Candidate:
    row: DatasetRow
    group: str  # rows with the same group always land on the same side of the split


def drop_exact_duplicates(candidates: list[Candidate]) -> tuple[list[Candidate], int]:
    """The candidates without rows equal (question, context, answer normalised) to an earlier one,
    and how many were dropped."""
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
