"""What the drift report cannot judge is inconclusive (exit 3), never a pass; it judges the last
complete window, not the current one; stale profiles and failed flushes show in the report, in the
textfile metrics and in an alert rule.

    .venv/bin/pytest tests/monitoring/test_drift_inconclusive.py -q

Profiles are written by a real ProfileWriter (whylogs + langkit + MiniLM) into windows placed
around the real clock with `log(when=...)`.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from serving.monitoring.drift import last_complete_window, load_config
from serving.monitoring.profiles import ProfileWriter, profiles_dir, read_flush_status, window_name
from tests.monitoring.test_drift import SHIFTED, _report

REPO = Path(__file__).resolve().parents[2]
CONFIG = load_config()
MINUTES = CONFIG.window_minutes


def _questions() -> list[str]:
    return [json.loads(line)["question"] for line in (REPO / "datasets/python-faq/eval.jsonl").open()][:24]


def _moment(windows_back: int) -> dt.datetime:
    """A time inside the window `windows_back` windows before the current one (0: the current)."""
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=MINUTES * windows_back)


def _log(home: Path, questions: list[str], when: dt.datetime) -> None:
    writer = ProfileWriter(home, background=False, window_minutes=MINUTES)
    for q in questions:
        writer.log(q, "I can only help with questions about Python.", when=when)
    writer.close()


def _home(monitor_home: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(monitor_home, home)  # keeps the cached training profile
    return home


def _prom(home: Path) -> dict[str, float]:
    text = (home / "monitoring/metrics/drift.prom").read_text()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def _alert(name: str) -> str:
    rules = yaml.safe_load((REPO / "serving/monitoring/alerts.yaml").read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r["alert"] == name]
    return rule["expr"]


def _run(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "r"
    code = _report(home, out, monkeypatch, repo_root, *extra)
    return code, json.loads((out / "report.json").read_text())


def test_too_few_rows_is_inconclusive_not_a_pass(monitor_home: Path, tmp_path: Path, repo_root: Path,
                                                monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    home = _home(monitor_home, tmp_path)
    _log(home, SHIFTED[:5], _moment(1))  # 5 rows of shifted traffic in the last complete window
    code, report = _run(home, tmp_path, monkeypatch, repo_root)
    assert code == 3
    assert report["verdict"] == "fail" and report["metrics"]["drift:training"]["passed"] is None
    assert any("only 5 rows" in why for why in report["info"]["inconclusive"])
    assert "inconclusive: drift:training: only 5 rows" in capsys.readouterr().out
    assert _prom(home)["llmops_drift_inconclusive"] == 1.0
    assert _alert("LLMOpsDriftInconclusive") == "llmops_drift_inconclusive > 0"


def test_every_column_missing_is_inconclusive(monitor_home: Path, tmp_path: Path, repo_root: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    home = _home(monitor_home, tmp_path)
    _log(home, _questions(), _moment(1))
    config = CONFIG.model_dump()  # columns the profiles do not have (say, after a langkit upgrade renamed them)
    config["training_columns"] = ["prompt.toxicity", "prompt.sentiment_nltk"]
    (tmp_path / "drift.yaml").write_text(yaml.safe_dump(config))
    code, report = _run(home, tmp_path, monkeypatch, repo_root, "--config", str(tmp_path / "drift.yaml"))
    assert code == 3
    assert report["metrics"]["drift:training"]["head"] is None
    assert any("no column has data" in why for why in report["info"]["inconclusive"])


def test_the_last_complete_window_is_judged_not_the_current_one(monitor_home: Path, tmp_path: Path, repo_root: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    home = _home(monitor_home, tmp_path)
    _log(home, SHIFTED, _moment(0))  # the current window is still filling (and drifted)
    code, report = _run(home, tmp_path, monkeypatch, repo_root)
    assert code == 3  # no profile for the last complete window: stale, not the partial one instead
    last = last_complete_window(dt.datetime.now(dt.UTC), MINUTES)
    assert report["info"]["window"] == last
    assert any(f"no profile for the last complete window {last}" in why for why in report["info"]["inconclusive"])
    _log(home, _questions(), _moment(1))  # in-distribution traffic fills the last complete window
    code, report = _run(home, tmp_path, monkeypatch, repo_root)
    assert code == 0, report["info"]["inconclusive"]
    assert report["info"]["window"] == last and report["metrics"]["drift:training"]["passed"] is True
    current = window_name(dt.datetime.now(dt.UTC), MINUTES)  # naming the partial window is bad input
    assert _report(home, tmp_path / "r2", monkeypatch, repo_root, "--window", current) == 2


def test_a_failed_flush_and_stale_profiles_alert(monitor_home: Path, tmp_path: Path, repo_root: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    home = _home(monitor_home, tmp_path)
    _log(home, _questions(), _moment(1))
    # a torn profile of the current window: the next flush cannot merge into it and fails
    current = window_name(dt.datetime.now(dt.UTC), MINUTES)
    (profiles_dir(home) / f"{current}.bin").write_bytes(b"torn")
    writer = ProfileWriter(home, background=False, window_minutes=MINUTES)
    writer.log("What is a list comprehension?", "A compact way to build a list.")
    with pytest.raises(Exception):  # noqa: B017 - whatever whylogs raises on a torn file
        writer.flush()
    (status,) = read_flush_status(home)
    assert status["last_failed"] and status["rows_lost"] == 1 and status["error"]
    code, report = _run(home, tmp_path, monkeypatch, repo_root)
    assert code == 3  # the window itself would pass: the failing flush makes it inconclusive
    assert report["metrics"]["drift:training"]["passed"] is True
    assert any("profile flush failing" in why for why in report["info"]["inconclusive"])
    assert _prom(home)["llmops_drift_profile_flush_failing"] == 1.0
    assert _alert("LLMOpsProfileFlushFailing") == "llmops_drift_profile_flush_failing > 0"

    # the only profiles are three days old (every flush since has failed): stale, and the alert fires
    stale = tmp_path / "stale"
    shutil.copytree(monitor_home, stale)
    _log(stale, _questions(), _moment(3 * 1440 // MINUTES))
    code, report = _run(stale, tmp_path, monkeypatch, repo_root)
    assert code == 3 and any("stale profiles" in why for why in report["info"]["inconclusive"])
    newest_end = _prom(stale)["llmops_drift_newest_profile_end_timestamp_seconds"]
    expr = _alert("LLMOpsServingProfilesStale")
    assert expr == "time() - llmops_drift_newest_profile_end_timestamp_seconds > 2 * 86400"
    assert dt.datetime.now(dt.UTC).timestamp() - newest_end > 2 * 86400  # the rule's condition holds
