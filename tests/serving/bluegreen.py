"""Fixtures of the blue/green tests: a registry with three versions of the micro model, API keys,
a short rollout config and one gateway (a real process with real workers) shared by the module.

    .venv/bin/pytest tests/serving/test_gateway.py tests/serving/test_rollout.py tests/serving/test_reliability.py -q
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.launch import wait_until
from serving.gateway.client import GatewayClient
from serving.gateway.testing import running_gateway
from tests.conftest import report_only_thresholds

# Short bakes so a release takes seconds: 2 steps x 1.5 s, a measurement every 0.5 s.
FAST_ROLLOUT: dict[str, Any] = {
    "strategy": "canary", "canary_percent": 50, "bake_seconds": 1.5,
    "analysis": {"interval_seconds": 0.5, "failure_limit": 0, "min_requests": 2, "inconclusive_limit": 1,
                 "probe": {"requests_per_second": 8, "max_tokens": 4}},
    "thresholds": {"max_error_rate": 0.02, "max_p95_latency_ms": 1500, "max_guard_flag_rate": 1.0},
    "pre_promotion": {"golden_tags": ["smoke"], "safety_tags": ["safety"], "ready_timeout_seconds": 120},
    "scale_down_delay_seconds": 300,
}


@dataclass
class BlueGreen:
    home: Path
    url: str
    proc: Any
    keys: dict[str, str]
    config: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Any:
        """The Settings of this store, for library calls (release, rollback) made on it."""
        from llmops.settings import Settings

        return Settings(home=self.home)

    def client(self) -> Any:
        return GatewayClient(self.url, self.settings)  # the local operator's token of this store

    def status(self) -> dict[str, Any]:
        client = self.client()
        try:
            return client.status()
        finally:
            client.close()

    def wait_up(self, colour: str, timeout: float = 60.0) -> dict[str, Any]:
        def up() -> dict[str, Any] | None:
            status = self.status()
            return status if status["colours"][colour]["up"] else None

        return wait_until(up, timeout=timeout, interval=0.2,
                          on_timeout=lambda: AssertionError(f"{colour} not up within {timeout} s: {self.status()}"))


def trained_from(version: int) -> str:
    """The (made-up) commit that version `version` of make_home's store was trained from."""
    return f"{version:x}".rjust(40, "c")


def make_home(root: Path, model_dir: Path, versions: int = 3) -> tuple[Path, dict[str, str]]:
    """A store with `versions` registered copies of one servable ONNX folder (version n trained
    from commit trained_from(n), a clean tree), production=1, candidate=2, and an admin, a
    release-manager and a user key. Library calls on it take `Settings(home=home)`; a gateway
    started on it gets LLMOPS_HOME=home in its own environment (running_gateway)."""
    from governance.apikeys import create_key
    from llmops.registry import Registry
    from llmops.settings import Settings

    home = root / "home"
    settings = Settings(home=home)
    registry = Registry(settings.registry_dir)
    for i in range(versions):
        registry.register({"onnx/fp32": model_dir}, {"note": f"test copy {i + 1}",
                                                     "git": {"sha": trained_from(i + 1), "dirty": False}})
    registry.set_alias("production", "1", reason="test setup")
    registry.set_alias("candidate", "2", reason="test setup")
    keys = {role: create_key(role, f"test-{role}", settings=settings)
            for role in ("admin", "release-manager", "user")}
    return home, keys


@pytest.fixture(scope="module")
def bluegreen(exported: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One gateway with blue = version 1 at 100 % (bootstrapped from `production`), faults allowed."""
    root = tmp_path_factory.mktemp("bluegreen")
    home, keys = make_home(root, exported.variants["fp32"])
    config = root / "rollout.yaml"
    gates = report_only_thresholds(root / "thresholds.yaml")  # a micro model: the machinery, not quality
    rollout = {**FAST_ROLLOUT, "pre_promotion": {**FAST_ROLLOUT["pre_promotion"], "thresholds": str(gates)}}
    config.write_text(yaml.safe_dump(rollout), encoding="utf-8")
    with running_gateway(home, allow_faults=True) as (url, proc):
        bg = BlueGreen(home, url, proc, keys, config)
        bg.wait_up("blue")
        yield bg
        bg.proc = None


def audit_actions(home: Path) -> list[dict[str, Any]]:
    import json

    path = home / "audit" / "audit.jsonl"
    # split on "\n" only: str.splitlines() also splits inside a reason holding U+2028
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
