"""The training config is typed: unknown keys and bad values are errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.errors import InputError
from training.config import TrainConfig, load_config, render_default_yaml


def test_repo_config_is_valid_and_matches_defaults(repo_root: Path) -> None:
    assert load_config(repo_root / "training" / "config.yaml") == TrainConfig()
    # The committed file is the generated one, so its comments document every field.
    assert (repo_root / "training" / "config.yaml").read_text() == render_default_yaml()


def test_overrides_are_typed_and_nested(tmp_path: Path) -> None:
    cfg = load_config(None, ["lora_r=4", "epochs=1.5", "bootstrap.num_layers=2", "target_modules=[q_proj]"])
    assert (cfg.lora_r, cfg.epochs, cfg.bootstrap.num_layers, cfg.target_modules) == (4, 1.5, 2, ["q_proj"])


@pytest.mark.parametrize("override, field", [
    ("lora_rank=4", "lora_rank"),
    ("bootstrap.layers=2", "bootstrap.layers"),
    ("lora_r=zero", "lora_r"),
    ("learning_rate=-1", "learning_rate"),
    ("precision=int3", "precision"),
    ("tag_passes={refusal: 0.5}", "tag_passes.refusal"),
])
def test_bad_keys_and_values_name_the_field(override: str, field: str) -> None:
    with pytest.raises(InputError) as err:
        load_config(None, [override])
    assert err.value.field == field


def test_unknown_key_in_file_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("lora_r: 8\nlerning_rate: 0.1\n")
    with pytest.raises(InputError, match=r"config.yaml \[lerning_rate\]: unknown key"):
        load_config(path)


def test_override_without_equals_is_rejected() -> None:
    with pytest.raises(InputError, match="key=value"):
        load_config(None, ["lora_r"])


def test_tag_passes_repeat_the_tagged_rows_after_their_part(tmp_path: Path) -> None:
    """{refusal: 2.0}: each refusal row of a part is seen twice per pass, appended after that part."""
    import json

    from training.finetune import mix_passes, training_parts

    class Tokenised:  # the two accessors training_parts reads, over in-memory rows
        def __init__(self, ids: list[list[str]]) -> None:
            self._ids = ids

        def ids(self, split: str, dataset: int) -> list[str]:
            return self._ids[dataset]

        def rows(self, split: str, dataset: int) -> list[dict]:
            return [{"input_ids": [hash(i) % 97]} | {"id": i} for i in self._ids[dataset]]

    dirs = []
    for name, rows in (("faq", [("f1", []), ("f2", ["refusal"])]),
                       ("contract", [("c1", ["python"]), ("c2", ["refusal", "off-topic"]), ("c3", ["refusal"])])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.jsonl").write_text("".join(
            json.dumps({"id": i, "question": "q", "answer": "a", "tags": t}) + "\n" for i, t in rows))
        dirs.append(tmp_path / name)
    data = Tokenised([["f1", "f2"], ["c1", "c2", "c3"]])
    cfg = load_config(None, ["epochs=2", "extra_epochs=1", "tag_passes={refusal: 2.0}"])
    seen = [r["id"] for r in mix_passes(training_parts(cfg, dirs, data), seed=1)]
    assert seen == ["f1", "f2", "f1", "f2", "f2", "f2", "c1", "c2", "c3", "c2", "c3"]
    plain = load_config(None, ["epochs=2", "extra_epochs=1", "tag_passes={}"])
    assert [r["id"] for r in mix_passes(training_parts(plain, dirs, data), seed=1)] == [
        "f1", "f2", "f1", "f2", "c1", "c2", "c3"]
