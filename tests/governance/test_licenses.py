"""The licence allowlist: allowed, denied and unknown ids, SPDX expressions, dataset and model cards."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from governance.licenses import (
    check_dataset_license,
    check_license,
    check_model_license,
    load_license_policy,
)
from llmops.errors import InputError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def policy():
    return load_license_policy(REPO / "governance" / "licenses.yaml")


@pytest.mark.parametrize("spdx", ["PSF-2.0", "Apache-2.0", "mit", "CC-BY-SA-4.0", "CC0-1.0",
                                  "MIT OR CC-BY-NC-4.0", "(MIT OR GPL-3.0) AND BSD-3-Clause",
                                  "Apache-2.0 WITH LLVM-exception"])
def test_allowed(policy, spdx: str) -> None:
    assert check_license(spdx, "dataset", "datasets/x/README.md", policy=policy) is None


@pytest.mark.parametrize(("spdx", "why"), [
    ("CC-BY-NC-4.0", "denied (non-commercial"),
    ("CC-BY-NC-SA-4.0", "denied (non-commercial"),
    ("CC-BY-ND-4.0", "denied (no derivatives"),
    ("GPL-3.0-only", "not on the dataset allowlist"),
    ("MIT AND CC-BY-NC-4.0", "CC-BY-NC-4.0 is denied"),
    ("NOASSERTION", "licence unknown"),
    ("MIT AND", "not an SPDX licence expression"),
    ("(MIT", "not an SPDX licence expression"),
    ("MIT; rm -rf", "not an SPDX licence expression"),
])
def test_refused_with_a_finding_naming_the_file_and_field(policy, spdx: str, why: str) -> None:
    finding = check_license(spdx, "dataset", "datasets/x/README.md", line=2, policy=policy)
    assert finding is not None and why in finding.message
    assert (finding.file, finding.line, finding.field, finding.severity) == (
        "datasets/x/README.md", 2, "license", "error")


def test_kind_matters_and_missing_licence_is_refused(policy) -> None:
    assert check_license("CreativeML-OpenRAIL-M", "model", "m/README.md", policy=policy) is None
    assert check_license("CreativeML-OpenRAIL-M", "dataset", "d/README.md", policy=policy) is not None
    assert "no licence declared" in check_license(None, "model", "m/README.md", policy=policy).message
    with pytest.raises(InputError, match="unknown licence kind"):
        check_license("MIT", "prompt", "p.yaml", policy=policy)


def test_dataset_card_licence(tmp_path: Path) -> None:
    assert check_dataset_license(REPO / "datasets" / "python-faq") == []  # PSF-2.0
    copy = tmp_path / "python-faq"
    shutil.copytree(REPO / "datasets" / "python-faq", copy)
    card = copy / "README.md"
    card.write_text(card.read_text(encoding="utf-8").replace("license: PSF-2.0", "license: CC-BY-NC-4.0", 1),
                    encoding="utf-8")
    [finding] = check_dataset_license(copy)
    assert (finding.file, finding.line, finding.field) == (str(card), 2, "license")
    assert "CC-BY-NC-4.0" in finding.message
    card.unlink()
    with pytest.raises(InputError, match="dataset card missing"):
        check_dataset_license(copy)


def test_model_card_licence(tmp_path: Path) -> None:
    assert "README.md missing" in check_model_license(tmp_path)[0].message
    (tmp_path / "README.md").write_text("---\nlibrary_name: transformers\nlicense: apache-2.0\n---\n# m\n",
                                        encoding="utf-8")
    assert check_model_license(tmp_path) == []
    (tmp_path / "README.md").write_text("---\nlicense: llama2\n---\n", encoding="utf-8")
    [finding] = check_model_license(tmp_path)
    assert finding.line == 2 and "not on the model allowlist" in finding.message


def test_invalid_licenses_yaml_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "licenses.yaml"
    text = (REPO / "governance" / "licenses.yaml").read_text(encoding="utf-8")
    path.write_text(text.replace("  dataset:\n", "  datasets:\n", 1), encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_license_policy(path)
    assert info.value.field == "allow.datasets" and "unknown key" in str(info.value)
    assert path.read_text(encoding="utf-8").splitlines()[info.value.line - 1] == "  datasets:"
