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
