"""The held-out safety sets (evals/safety/heldout/) load and are really held out.

    .venv/bin/pytest tests/evals/test_safety_heldout.py -q

Schema, size and disjointness only: the measured rates live in evals/safety/heldout/README.md
and are deliberately NOT gated here (the detectors must not be tuned to this folder).
"""

from __future__ import annotations

import json
import re

from evals.safety_runner import BENIGN, SAFETY_DIR, AttackItem, load_attack_sets

HELDOUT_DIR = SAFETY_DIR / "heldout"


def _key(item: AttackItem) -> str:
    text = item.prompt if item.prompt is not None else (item.raw_body or json.dumps(item.body, sort_keys=True))
    return re.sub(r"\s+", " ", text).strip().casefold()


def test_heldout_sets_load_with_every_class() -> None:
    heldout, tuning = load_attack_sets(HELDOUT_DIR), load_attack_sets(SAFETY_DIR)
    assert set(heldout) == set(tuning)
    for name, attack_set in heldout.items():
        assert len(attack_set.items) >= (60 if name == BENIGN else 12), name


def test_heldout_items_are_not_copied_from_the_tuning_sets() -> None:
    heldout, tuning = load_attack_sets(HELDOUT_DIR), load_attack_sets(SAFETY_DIR)
    tuning_items = [i for s in tuning.values() for i in s.items]
    heldout_items = [i for s in heldout.values() for i in s.items]
    assert not {_key(i) for i in heldout_items} & {_key(i) for i in tuning_items}
    assert not {i.id for i in heldout_items} & {i.id for i in tuning_items}
    assert len({_key(i) for i in heldout_items}) == len(heldout_items)  # no repeats inside the held-out sets


def test_default_sets_do_not_pick_up_the_heldout_folder() -> None:
    ids = {i.id for s in load_attack_sets(SAFETY_DIR).values() for i in s.items}
    assert not any(i.startswith("ho-") for i in ids)
