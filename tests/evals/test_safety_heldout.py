"""The held-out safety sets (evals/safety/heldout/) load and are really held out.

    .venv/bin/pytest tests/evals/test_safety_heldout.py -q

Schema, size, provenance and disjointness; the measured rates live in
evals/safety/heldout/README.md and are deliberately NOT asserted here (the detectors must not be
tuned to this folder). One test runs `llmops safety --heldout` on 12 toxic and 12 benign held-out
items, to show the held-out rates are reported and gated beside the tuning rates.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from evals.safety_runner import BENIGN, SAFETY_DIR, load_attack_sets, run_safety, shared_items
from llmops.errors import InputError

HELDOUT_DIR = SAFETY_DIR / "heldout"
# Scripts that mark a non-English item; Latin-script languages are named by their words.
_SCRIPTS = {"cyrillic": re.compile(r"[\u0400-\u04ff]{4}"), "cjk": re.compile(r"[\u4e00-\u9fff\u3040-\u30ff]{3}")}
_LATIN = {"de": re.compile(r"\b(und|nicht|wie|ich|mir|dein|deine)\b", re.I),
          "fr": re.compile(r"\b(les|tu|une|pour|ton|réponds)\b", re.I),
          "es": re.compile(r"\b(cómo|tus|una|el|para|dame)\b", re.I)}


def test_heldout_sets_load_with_every_class_and_provenance() -> None:
    heldout, tuning = load_attack_sets(HELDOUT_DIR), load_attack_sets(SAFETY_DIR)
    assert set(heldout) == set(tuning)
    for name, attack_set in heldout.items():
        assert len(attack_set.items) >= (120 if name == BENIGN else 25), name
        for item in attack_set.items:
            assert item.source and item.note, f"{item.id} needs a source and a note"
    attacks = sum(len(s.items) for n, s in heldout.items() if n != BENIGN)
    assert attacks >= 250 and attacks + len(heldout[BENIGN].items) >= 300


def test_heldout_sets_cover_languages_and_encodings() -> None:
    prompts = [i.prompt for s in load_attack_sets(HELDOUT_DIR).values() for i in s.items if i.prompt]
    languages = {k for k, rx in {**_SCRIPTS, **_LATIN}.items() if any(rx.search(p) for p in prompts)}
    assert len(languages) >= 5, languages
    notes = " ".join(i.note or "" for s in load_attack_sets(HELDOUT_DIR).values() for i in s.items).lower()
    for technique in ("base64", "hex", "rot13", "leetspeak", "spaced", "homoglyph", "zero-width", "url-encoded",
                      "translate", "fence"):
        assert technique in notes, technique


def test_heldout_items_are_not_copied_from_the_tuning_sets() -> None:
    heldout, tuning = load_attack_sets(HELDOUT_DIR), load_attack_sets(SAFETY_DIR)
    assert shared_items(tuning, heldout) == []
    texts = [i.prompt or "" for s in heldout.values() for i in s.items if i.prompt]
    assert len(set(texts)) == len(texts)  # no repeats inside the held-out sets


def _copy_heldout(tmp_path: Path) -> Path:
    target = tmp_path / "heldout"
    shutil.copytree(HELDOUT_DIR, target)
    return target


def test_a_copied_tuning_item_is_caught(tmp_path: Path) -> None:
    """The data check fails on a held-out folder that slipped in a tuning item: verbatim (spacing and
    case changed, new id), and reworded by one word (near copy)."""
    target = _copy_heldout(tmp_path)
    tuning = load_attack_sets(SAFETY_DIR)
    victim = tuning["jailbreak"].items[0].prompt
    assert victim and len(victim.split()) >= 8
    path = target / "jailbreak.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["items"].append({"id": "ho-jb-copy", "prompt": "  " + victim.upper().replace(" ", "  "),
                          "source": "copied", "note": "copied"})
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    found = shared_items(tuning, load_attack_sets(target))
    assert [f.field for f in found] == ["ho-jb-copy"] and "repeats tuning item" in found[0].message
    assert found[0].file == str(path)

    words = victim.split()
    data["items"][-1]["prompt"] = " ".join(words[:-1] + ["immediately" if words[-1] != "immediately" else "now"])
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    found = shared_items(tuning, load_attack_sets(target))
    assert len(found) == 1 and "nearly repeats" in found[0].message


def test_run_safety_refuses_a_heldout_folder_with_a_copied_item(tmp_path: Path) -> None:
    target = _copy_heldout(tmp_path)
    path = target / "benign.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["items"].append({"id": "ho-b-copy", "prompt": load_attack_sets(SAFETY_DIR)[BENIGN].items[3].prompt,
                          "source": "copied", "note": "copied"})
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(InputError, match=r"benign.yaml.*ho-b-copy.*repeat"):
        run_safety("http://127.0.0.1:9", target)  # fails before any request is sent


def test_default_sets_do_not_pick_up_the_heldout_folder() -> None:
    ids = {i.id for s in load_attack_sets(SAFETY_DIR).values() for i in s.items}
    assert not any(i.startswith("ho-") for i in ids)


def test_heldout_rates_are_reported_and_gated_beside_the_tuning_rates(tmp_path: Path) -> None:
    """`llmops safety --heldout`: one session runs both, and a held-out breach fails the gate by its own name."""
    import json

    from llmops.cli.safety import safety
    from llmops.errors import GateFailed
    from serving.guards import GuardConfig
    from tests.evals.openai_stub import serve
    from tests.serving.echo_worker import make_worker

    def trimmed(src: Path, name: str) -> Path:  # 12 items per class: the guards' classifier is slow
        for cls in ("toxic", BENIGN):
            data = yaml.safe_load((src / f"{cls}.yaml").read_text(encoding="utf-8"))
            data["items"] = data["items"][:12]
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / f"{cls}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return tmp_path / name

    args = ["--class", "toxic", "--heldout", str(trimmed(HELDOUT_DIR, "heldout"))]
    with serve(make_worker(GuardConfig())) as url:  # the guards: toxic is stopped in both
        safety.main(["--endpoint", url, *args, "--out", str(tmp_path / "guarded")], standalone_mode=False)
    with serve(make_worker()) as url, pytest.raises(GateFailed) as failed:  # a bare worker stops nothing
        safety.main(["--endpoint", url, *args, "--out", str(tmp_path / "bare")], standalone_mode=False)
    assert "safety.heldout.block_rate.toxic" in str(failed.value)
    guarded = json.loads((tmp_path / "guarded" / "report.json").read_text())
    assert guarded["verdict"] == "pass"
    assert {"safety.block_rate.toxic", "safety.false_alarm_rate", "safety.heldout.block_rate.toxic",
            "safety.heldout.false_alarm_rate"} <= set(guarded["metrics"])
    suites = {c["suite"] for c in guarded["cases"]}
    assert {"safety.toxic", "safety.heldout.toxic", "safety.heldout.benign"} <= suites
    assert guarded["info"]["heldout"]["items"] == {"toxic": 12, BENIGN: 12}
