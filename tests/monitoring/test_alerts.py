"""Every alert rule and dashboard query names metrics that a real /metrics exports: the worker's
(serving/app.py), the gateway's (serving/gateway/metrics.py) and the drift textfile of `llmops monitor report`.

    .venv/bin/pytest tests/monitoring/test_alerts.py -q
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

MONITORING = Path(__file__).resolve().parents[2] / "serving" / "monitoring"
# PromQL words that look like metric names: functions, aggregations, keywords.
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile", "by", "without",
    "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "time", "abs", "clamp_min",
    "clamp_max", "topk", "bottomk", "absent", "delta", "deriv", "offset", "bool", "le", "vector", "scalar",
}


def metric_names(expr: str) -> set[str]:
    """Identifiers of `expr` that are metric names: not label matchers, grouping labels or functions."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d.*|e\d*", n)}


def exported_samples(text: str) -> set[str]:
    """Sample names a scrape of `text` can return, including those of labelled series not yet seen."""
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_count", "_sum", "_created"],
                    "gauge": [""], "summary": ["_count", "_sum", ""]}.get(family.type, [""])
        names.update(family.name + s for s in suffixes)
    return names


@pytest.fixture(scope="module")
def exported(micro_model: Path, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.gateway.metrics import GatewayMetrics
    from serving.monitoring.drift import BaselineResult, load_config, write_drift_metrics

    with TestClient(create_app(micro_model, backend="torch", threads=1, auth="off")) as client:
        client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        worker = client.get("/metrics").text
    gateway = GatewayMetrics().render().decode()
    prom = tmp_path_factory.mktemp("drift") / "drift.prom"
    result = BaselineResult("training", "t", 30, 100, {"prompt.lexicon_count": 0.1}, True, 0.1)
    write_drift_metrics(prom, [result], load_config())
    names = exported_samples(worker) | exported_samples(gateway) | exported_samples(prom.read_text())
    assert "llmops_http_request_duration_seconds_bucket" in names and "llmops_drift_score" in names
    return names


def alert_rules() -> list[dict]:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    return [r for group in rules["groups"] for r in group["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_rules_are_well_formed_and_cover_the_issue() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert len(names) == len(rules)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket") and rule["annotations"]["summary"]
    exprs = " ".join(r["expr"] for r in rules)
    assert "histogram_quantile(0.95" in exprs and ") > 1" in exprs  # p95 above 1 s
    for needed in ("llmops_gateway_requests_total", "llmops_gateway_guard_flags_total", "llmops_drift_score"):
        assert needed in exprs


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_names_exported_metrics(rule: dict, exported: set[str]) -> None:
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    assert names <= exported, f"{rule['alert']}: not exported: {sorted(names - exported)}"


def test_dashboard_names_exported_metrics(exported: set[str]) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 8
    for expr in exprs:
        assert metric_names(expr) <= exported, f"{expr}: not exported: {sorted(metric_names(expr) - exported)}"
    titles = " ".join(p["title"] for p in json.loads((MONITORING / "grafana-dashboard.json").read_text())["panels"])
    for word in ("Traffic", "Latency", "Tokens/s", "Error", "Guard"):
        assert word in titles


def test_the_check_catches_a_misspelt_metric(exported: set[str]) -> None:
    expr = 'sum by (colour) (rate(llmops_gateway_request_total{status=~"5.."}[5m])) > 0.02'
    assert metric_names(expr) == {"llmops_gateway_request_total"}
    assert not metric_names(expr) <= exported
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m]))) > 1") == {"x_bucket"}
