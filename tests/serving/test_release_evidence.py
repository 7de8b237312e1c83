"""A release is never promoted on no evidence, and never left half done (issue 11).

    .venv/bin/pytest tests/serving/test_release_evidence.py -q -m slow

Real gateway, real workers (the micro model), real releases, in file order on one gateway:
- no preview traffic and no probes: every measurement is inconclusive, the release aborts;
- the controller's own probes measure a quiet hour, and the release promotes;
- SIGTERM or Ctrl-C in the middle of a bake restores the stable colour and audits the abort;
- a served prompt that breaks the chat path fails pre-promotion, which the raw-completion route misses;
then, on a gateway of its own, a first release (no stable colour) judged by the absolute floors.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.launch import wait_until
from serving.gateway.testing import running_gateway
from tests.conftest import report_only_thresholds
from tests.serving.bluegreen import FAST_ROLLOUT, BlueGreen, audit_actions, make_home

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _config(root: Path, name: str, gates: Path, **analysis: Any) -> Path:
    rollout = {**FAST_ROLLOUT, "analysis": {**FAST_ROLLOUT["analysis"], **analysis},
               "pre_promotion": {**FAST_ROLLOUT["pre_promotion"], "thresholds": str(gates)}}
    path = root / name
    path.write_text(yaml.safe_dump(rollout), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gateway(exported: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("evidence")
    home, keys = make_home(root, exported.variants["fp32"], versions=3)
    # version 4 serves a prompt bloated past the micro model's 256-token window: every chat request
    # overflows, while the repository's prompts (the raw-completion route) still fit
    from llmops.registry import Registry
    from llmops.settings import Settings

    bloated = root / "bloated"
    shutil.copytree(exported.variants["fp32"], bloated)
    prompt = yaml.safe_load((bloated / "prompt.yaml").read_text(encoding="utf-8"))
    prompt["messages"][0]["content"] += " Always be precise about Python versions and library names." * 40
    (bloated / "prompt.yaml").write_text(yaml.safe_dump(prompt, sort_keys=False), encoding="utf-8")
    Registry(Settings(home=home).registry_dir).register({"onnx/fp32": bloated}, {"note": "bloated served prompt"})
    gates = report_only_thresholds(root / "thresholds.yaml")
    with running_gateway(home, allow_faults=True) as (url, proc):
        bg = BlueGreen(home, url, proc, keys, _config(root, "rollout.yaml", gates))
        bg.extra.update(root=root, gates=gates)
        bg.wait_up("blue")
        yield bg


def _release(bg: BlueGreen, version: str, config: Path) -> Any:
    from llmops.jobs.release import release
    from serving.rollout import load_config

    return release(version, settings=bg.settings, config=load_config(config), gateway_url=bg.url)


def _last_abort(home: Path) -> dict[str, Any]:
    return [e for e in audit_actions(home) if e["action"] == "release.abort"][-1]


def test_a_release_with_no_preview_traffic_is_not_promoted(gateway):
    from llmops.jobs.release import ReleaseAborted
    from llmops.registry import Registry

    quiet = _config(gateway.extra["root"], "quiet.yaml", gateway.extra["gates"], probe={"requests_per_second": 0})
    with pytest.raises(ReleaseAborted, match="inconclusive"):
        _release(gateway, "2", quiet)
    status = gateway.status()
    assert status["stable"] == "blue" and status["colours"]["blue"]["weight"] == 100
    assert Registry(gateway.settings.registry_dir).aliases()["production"] == "1"
    abort = _last_abort(gateway.home)
    assert abort["details"]["verdict"] == "inconclusive" and "no evidence" in abort["reason"]


def test_the_controllers_probes_measure_a_quiet_release_which_then_promotes(gateway):
    from llmops.registry import Registry

    result = _release(gateway, "2", gateway.config)
    assert result.promoted and result.colour == "green"
    promote = audit_actions(gateway.home)[-1]  # the record anchors the log at its own promote entry
    assert promote["action"] == "release.promote"
    assert result.analysis["audit_anchor"] == f"{promote['seq']}:{promote['hash']}"
    assert Registry(gateway.settings.registry_dir).aliases()["production"] == "2"
    phases = result.analysis["phases"]
    checks = phases[0]["checks"]
    chat = checks["golden (chat, served prompt)"]
    assert chat["route"] == "chat" and chat["cases"] > 0 and chat["passed"]
    bakes = [p for p in phases if p["phase"].startswith("bake")]
    assert [p["phase"] for p in bakes] == ["bake 50%", "bake 100%"]
    for bake in bakes:
        assert bake["probes"]["requests"] > 0 and bake["probes"]["errors"] == 0
        verdicts = [m["verdict"] for m in bake["measurements"]]
        assert "pass" in verdicts and "fail" not in verdicts, verdicts


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_bake_restores_the_stable_colour_and_audits_the_abort(gateway, sig):
    from llmops.registry import Registry

    long_bake = gateway.extra["root"] / "long-bake.yaml"
    rollout = yaml.safe_load(gateway.config.read_text(encoding="utf-8"))
    long_bake.write_text(yaml.safe_dump({**rollout, "bake_seconds": 120}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "LLMOPS_API_KEY"}
    env["LLMOPS_HOME"] = str(gateway.home)
    proc = subprocess.Popen([sys.executable, "-m", "llmops", "release", "3", "--config", str(long_bake),
                             "--gateway", gateway.url], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            # a shell without job control starts background jobs with SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        def baking() -> bool:
            status = gateway.status()
            return status["colours"]["blue"]["weight"] > 0 and status["colours"]["blue"]["version"] == "3"

        wait_until(baking, timeout=120, interval=0.2,
                   on_timeout=lambda: AssertionError(f"no bake started: {gateway.status()}"))
        time.sleep(0.5)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert "aborted" in out and "traffic is on green" in out
    status = gateway.status()
    assert status["stable"] == "green" and status["colours"]["green"]["weight"] == 100
    assert status["colours"]["blue"]["weight"] == 0
    assert Registry(gateway.settings.registry_dir).aliases()["production"] == "2"
    abort = _last_abort(gateway.home)
    assert sig.name in abort["reason"] and abort["details"]["version"] == "3"


def test_a_served_prompt_that_breaks_the_chat_path_fails_pre_promotion(gateway):
    from llmops.jobs.release import ReleaseAborted

    stable = gateway.status()["stable"]
    with pytest.raises(ReleaseAborted, match=r"chat, served prompt\): \d+ request\(s\) failed only on the preview"):
        _release(gateway, "4", gateway.config)
    record = _last_abort(gateway.home)["details"]["analysis"][0]["checks"]
    assert record["golden"]["passed"], "the raw-completion route does not see the served prompt"
    assert not record["golden (chat, served prompt)"]["passed"]
    status = gateway.status()
    assert status["stable"] == stable and status["colours"][stable]["weight"] == 100


def test_a_first_release_is_judged_by_the_absolute_floors(exported, tmp_path):
    """No stable colour, so no baseline: the floors of evals/thresholds.yaml decide, and a request the
    preview rejects fails it (there is no active version whose own failures would excuse it). The
    micro model cannot meet floors set from the real default model. The same analysis passing a
    good version is test_the_controllers_probes_measure_a_quiet_release_which_then_promotes."""
    from llmops.jobs.release import ReleaseAborted
    from llmops.registry import Registry
    from llmops.settings import Settings

    home = tmp_path / "home"
    registry = Registry(Settings(home=home).registry_dir)
    registry.register({"onnx/fp32": exported.variants["fp32"]}, {"note": "first"})
    with running_gateway(home) as (url, proc):
        bg = BlueGreen(home, url, proc, {}, tmp_path / "unused")
        assert bg.status()["stable"] is None
        floors = _config(tmp_path, "floors.yaml", REPO / "evals" / "thresholds.yaml")
        with pytest.raises(ReleaseAborted, match="< floor"):
            _release(bg, "1", floors)
        assert "production" not in registry.aliases()
        assert not any(c["weight"] for c in bg.status()["colours"].values())
    abort = _last_abort(home)
    assert "(active: None)" in abort["reason"] and abort["details"]["stable"] is None
