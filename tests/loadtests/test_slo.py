"""The SLO file's validation and the loopback guard.

    .venv/bin/pytest tests/loadtests/test_slo.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmops.errors import InputError
from loadtests.locust_runner import DEFAULT_SLO, check_loopback
from loadtests.slo import load_slo, parse_duration


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "slo.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _repo_slo() -> dict:
    return yaml.safe_load(DEFAULT_SLO.read_text(encoding="utf-8"))


def test_repo_slo_file_is_valid():
    cfg = load_slo(DEFAULT_SLO)
    assert cfg.run.duration == 20.0 and cfg.run.users == 4
    assert 0 <= cfg.slo.max_error_rate < 1


def test_every_field_of_the_repo_slo_file_is_commented():
    lines = DEFAULT_SLO.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.startswith("  ") and ":" in line and not line.strip().startswith("#"):
            assert lines[i - 1].strip().startswith("#"), f"slo.yaml:{i + 1} has no comment above it: {line.strip()}"


@pytest.mark.parametrize(("section", "key"), [("slo", "p99_latency_ms"), ("run", "userz"), (None, "extra")])
def test_unknown_key_is_an_error_naming_it(tmp_path, section, key):
    data = _repo_slo()
    (data[section] if section else data)[key] = 1
    path = _write(tmp_path, data)
    with pytest.raises(InputError, match="unknown key") as err:
        load_slo(path)
    dotted = f"{section}.{key}" if section else key
    assert err.value.field == dotted and str(path) in str(err.value)


@pytest.mark.parametrize(("section", "key", "value", "field"), [
    ("slo", "max_error_rate", 1.5, "slo.max_error_rate"),
    ("slo", "p95_latency_ms", 0, "slo.p95_latency_ms"),
    ("run", "users", 1000, "run.users"),
    ("run", "duration", "forever", "run.duration"),
    ("run", "duration", "2h", "run.duration"),
    ("run", "stream_weight", "x", "run.stream_weight"),
])
def test_bad_values_name_their_field(tmp_path, section, key, value, field):
    data = _repo_slo()
    data[section][key] = value
    with pytest.raises(InputError) as err:
        load_slo(_write(tmp_path, data))
    assert err.value.field == field


def test_missing_field_and_no_task_are_errors(tmp_path):
    data = _repo_slo()
    del data["slo"]["ttft_p95_ms"]
    with pytest.raises(InputError) as err:
        load_slo(_write(tmp_path, data))
    assert err.value.field == "slo.ttft_p95_ms"
    data = _repo_slo()
    data["run"]["chat_weight"] = data["run"]["stream_weight"] = 0
    with pytest.raises(InputError, match="no task would run"):
        load_slo(_write(tmp_path, data))


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_slo(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("slo: [unclosed\n", encoding="utf-8")
    with pytest.raises(InputError, match="invalid YAML"):
        load_slo(bad)


def test_parse_duration():
    assert parse_duration("20s") == 20 and parse_duration("1.5m") == 90 and parse_duration("500ms") == 0.5
    assert parse_duration(7) == 7
    for bad in ("0s", "-1s", "abc", "11m", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:1/", "http://[::1]:8000",
                                 "https://127.8.9.10"])
def test_loopback_targets_pass(url):
    assert check_loopback(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000", "http://0.0.0.0:8000", "http://example.com",
                                 "ftp://127.0.0.1", "127.0.0.1:8000", "http://[2001:db8::1]:80"])
def test_non_loopback_targets_are_refused(url):
    with pytest.raises(InputError) as err:
        check_loopback(url)
    assert err.value.field == "target"


def test_cli_refuses_non_loopback_with_exit_2(capsys, tmp_path):
    from llmops.cli import main

    assert main(["loadtest", "--target", "http://192.0.2.10:8000", "--out", str(tmp_path)]) == 2
    assert "only loopback" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything ran or was written
    assert main(["loadtest", "--out", str(tmp_path)]) == 2  # neither --target nor --model
