"""The Kubernetes render: Argo Rollouts manifests that parse, reference each other consistently and
carry serving/rollout.yaml's thresholds and the gateway's real metric names.

    .venv/bin/pytest tests/serving/test_k8s_render.py -q
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from llmops.errors import InputError
from serving.k8s_render import MANIFESTS, load_rollout_policy, render_cli, render_manifests
from serving.rollout import load_config

ROLLOUT_YAML = Path(__file__).resolve().parents[2] / "serving" / "rollout.yaml"
IMAGE = "registry.example.com/llmops/serving:v1.3.0-rc.1"
VERSION = "v1.3.0-rc.1"


def _render(out: Path, config: Path = ROLLOUT_YAML, **kwargs) -> dict[str, list[dict]]:
    """kind -> documents of that kind, from a fresh render into `out`."""
    paths = render_manifests(VERSION, kwargs.pop("image", IMAGE), out, config, **kwargs)
    assert [p.name for p in paths] == list(MANIFESTS)
    by_kind: dict[str, list[dict]] = {}
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    return _render(tmp_path_factory.mktemp("k8s"))


@pytest.fixture(scope="module")
def rollout(docs) -> dict:
    (only,) = docs["Rollout"]
    return only


def _templates(docs) -> dict[str, dict]:
    return {t["metadata"]["name"]: t for t in docs["AnalysisTemplate"]}


def _metrics(docs) -> dict[str, dict]:
    return {m["name"]: m for t in docs["AnalysisTemplate"] for m in t["spec"]["metrics"]}


def _threshold(condition: str, op: str) -> float:
    match = re.fullmatch(rf"len\(result\) > 0 && result\[0\] {re.escape(op)} ([0-9.]+)", condition)
    assert match, condition
    return float(match.group(1))


def test_kinds_api_versions_and_names(docs) -> None:
    assert {kind: len(items) for kind, items in docs.items()} == {"Rollout": 1, "Service": 2, "AnalysisTemplate": 2}
    for kind, items in docs.items():
        for doc in items:
            assert doc["apiVersion"] == ("v1" if kind == "Service" else "argoproj.io/v1alpha1")
            assert doc["metadata"]["namespace"] == "llmops"
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def test_pod_template_serves_the_version_with_probes_and_resources(rollout) -> None:
    spec = rollout["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    # The version must not be in the immutable selector: both colours' pods have to match it.
    assert "app.kubernetes.io/version" not in spec["selector"]["matchLabels"]
    assert pod_labels["app.kubernetes.io/version"] == VERSION
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    command = container["command"]
    assert command[:2] == ["llmops", "serve"]
    assert command[command.index("--model") + 1] == f"/models/{VERSION}"
    assert command[command.index("--port") + 1] == "8000"
    assert container["ports"][0]["containerPort"] == 8000
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", 8000)
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["models"] == "/models"
    assert "models" in {v["name"] for v in spec["template"]["spec"]["volumes"]}


def test_services_select_the_rollout_pods(docs, rollout) -> None:
    pod_labels = rollout["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for p in rollout["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for service in docs["Service"]:
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert all(p["targetPort"] in ports for p in service["spec"]["ports"])


def test_blue_green_references_exist_and_args_match(docs, rollout) -> None:
    blue_green = rollout["spec"]["strategy"]["blueGreen"]
    services = {s["metadata"]["name"] for s in docs["Service"]}
    assert {blue_green["activeService"], blue_green["previewService"]} == services
    assert blue_green["activeService"] != blue_green["previewService"]
    assert isinstance(blue_green["autoPromotionEnabled"], bool)
    templates = _templates(docs)
    for phase in ("prePromotionAnalysis", "postPromotionAnalysis"):
        analysis = blue_green[phase]
        declared: set[str] = set()
        for ref in analysis["templates"]:
            assert ref["templateName"] in templates, f"{phase} names a template that is not rendered"
            declared |= {a["name"] for a in templates[ref["templateName"]]["spec"]["args"]}
        passed = {a["name"] for a in analysis["args"]}
        # Every declared arg without a default must be passed, and nothing undeclared is.
        assert passed == declared, (phase, passed, declared)
        for arg in analysis["args"]:
            assert ("value" in arg) != ("valueFrom" in arg)
    pre = {a["name"]: a for a in blue_green["prePromotionAnalysis"]["args"]}
    assert pre["service-name"]["value"] == blue_green["previewService"]
    post = {a["name"]: a for a in blue_green["postPromotionAnalysis"]["args"]}
    assert post["pod-template-hash"]["valueFrom"] == {"podTemplateHashValue": "Latest"}


def test_placeholders_survive_and_name_declared_args(docs) -> None:
    for template in docs["AnalysisTemplate"]:
        declared = {a["name"] for a in template["spec"]["args"]}
        text = yaml.safe_dump(template)
        used = set(re.findall(r"\{\{args\.([-a-z0-9]+)\}\}", text))
        assert used, f"{template['metadata']['name']} uses no args"
        assert used <= declared
        # Nothing else of Jinja's or ours leaked through.
        assert "[[" not in text and "[%" not in text


def test_thresholds_and_cadence_come_from_rollout_yaml(docs) -> None:
    raw = yaml.safe_load(ROLLOUT_YAML.read_text(encoding="utf-8"))
    # Read independently of the render's loader, then cross-checked with the controller's loader.
    assert load_config(ROLLOUT_YAML).thresholds.max_error_rate == raw["thresholds"]["max_error_rate"]
    metrics = _metrics(docs)
    expected = {"error-rate": raw["thresholds"]["max_error_rate"],
                "p95-latency": raw["thresholds"]["max_p95_latency_ms"] / 1000,
                "guard-flag-rate": raw["thresholds"]["max_guard_flag_rate"],
                "client-error-rate-increase": raw["thresholds"]["max_client_error_rate_increase"]}
    analysis = raw["analysis"]
    count = analysis["count"] or max(1, int(raw["bake_seconds"] // analysis["interval_seconds"]))
    for name, threshold in expected.items():
        metric = metrics[name]
        assert _threshold(metric["successCondition"], "<=") == pytest.approx(threshold)
        assert _threshold(metric["failureCondition"], ">") == pytest.approx(threshold)
        assert metric["interval"] == f"{analysis['interval_seconds']:g}s"
        assert metric["count"] == count
        assert metric["failureLimit"] == analysis["failure_limit"]
        assert metric["inconclusiveLimit"] == analysis["inconclusive_limit"]  # no traffic pauses, never promotes
        assert f">= {analysis['min_requests']})" in metric["provider"]["prometheus"]["query"]
        assert metric["provider"]["prometheus"]["address"].startswith("http")
    assert "histogram_quantile(0.95," in metrics["p95-latency"]["provider"]["prometheus"]["query"]
    # 4xx: the new pods' rate minus the old pods' (or 0 when they have none), as measure() does
    client = metrics["client-error-rate-increase"]["provider"]["prometheus"]["query"]
    assert 'status=~"4.."' in client and 'rollouts_pod_template_hash!="{{args.pod-template-hash}}"' in client
    assert "or on() vector(0))) and on() (sum(increase(" in client  # no old-pod traffic: minus 0
    rollout_doc = docs["Rollout"][0]
    assert rollout_doc["spec"]["strategy"]["blueGreen"]["scaleDownDelaySeconds"] == raw["scale_down_delay_seconds"]


def test_probe_jobs_run_the_golden_and_safety_evals_against_the_preview(docs) -> None:
    raw = yaml.safe_load(ROLLOUT_YAML.read_text(encoding="utf-8"))["pre_promotion"]
    job_metrics = [m for m in _metrics(docs).values() if "job" in m["provider"]]
    tags = []
    for metric in job_metrics:
        job = metric["provider"]["job"]["spec"]
        assert job["backoffLimit"] == 0
        pod = job["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        (container,) = pod["containers"]
        assert container["image"] == IMAGE
        command = container["command"]
        assert command[:2] == ["llmops", "eval"]
        endpoint = command[command.index("--endpoint") + 1]
        assert endpoint == "http://{{args.service-name}}.{{args.namespace}}.svc:8000"
        tags.append(command[command.index("--tags") + 1].split(","))
        # the gate: the floors and production's recorded eval, never report-only
        assert command[command.index("--against") + 1] == "production" and "--no-gate" not in command
        env = {e["name"] for e in pod["containers"][0]["env"]}
        assert "LLMOPS_REGISTRY_URI" not in env  # values.registry_uri unset: the job exits 3 and fails
    assert sorted(tags) == sorted([raw["golden_tags"], raw["safety_tags"]])


def test_probe_jobs_read_production_from_the_registry_server(tmp_path: Path) -> None:
    from serving.k8s_render import DEFAULT_VALUES, load_values

    values = load_values(DEFAULT_VALUES).model_copy(update={"registry_uri": "http://mlflow.llmops.svc:5000"})
    docs = _render(tmp_path, values=values)
    for metric in (m for m in _metrics(docs).values() if "job" in m["provider"]):
        (container,) = metric["provider"]["job"]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["LLMOPS_REGISTRY_URI"] == "http://mlflow.llmops.svc:5000"


def _gateway_sample_names(path: Path) -> set[str]:
    """Series names the gateway exports, from its prometheus_client metric constructors.

    A Counter "x" (or "x_total") is exported as x_total; a Histogram "x" as x_bucket, x_sum,
    x_count; a Gauge as x. Names may be literals or module-level string constants.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {t.id: n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                 for t in n.targets if isinstance(t, ast.Name)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        kind = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if kind not in {"Counter", "Histogram", "Gauge", "Summary"}:
            continue
        first = node.args[0]
        name = first.value if isinstance(first, ast.Constant) else constants.get(getattr(first, "id", ""))
        if not isinstance(name, str):
            continue
        if kind == "Counter":
            names.add(name.removesuffix("_total") + "_total")
        elif kind == "Histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "Summary":
            names |= {f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def test_every_metric_in_the_queries_is_one_the_gateway_exports(docs, repo_root: Path) -> None:
    gateway = repo_root / "serving" / "gateway" / "metrics.py"
    if not gateway.exists():
        pytest.fail("serving/gateway/metrics.py is missing: the analysis queries cannot be checked against its metrics")
    exported = _gateway_sample_names(gateway)
    assert exported, "found no prometheus_client metric in serving/gateway/metrics.py"
    used = set()
    for metric in _metrics(docs).values():
        if "prometheus" in metric["provider"]:
            used |= set(re.findall(r"\b(llmops_[a-z0-9_]+)\{", metric["provider"]["prometheus"]["query"]))
    assert used and used <= exported, f"not exported by the gateway: {sorted(used - exported)}"


def test_changing_the_config_changes_the_render(tmp_path: Path) -> None:
    raw = yaml.safe_load(ROLLOUT_YAML.read_text(encoding="utf-8"))
    raw["thresholds"].update(max_error_rate=0.125, max_p95_latency_ms=2750, max_guard_flag_rate=0.00001,
                             max_client_error_rate_increase=0.25)
    raw["analysis"].update(interval_seconds=0.5, count=7, failure_limit=3, min_requests=11)
    raw["scale_down_delay_seconds"] = 42
    config = tmp_path / "rollout.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    docs = _render(tmp_path / "out", config)
    metrics = _metrics(docs)
    assert _threshold(metrics["error-rate"]["successCondition"], "<=") == 0.125
    assert _threshold(metrics["p95-latency"]["successCondition"], "<=") == 2.75
    # A plain decimal, not 1e-05: the condition parser must read the number it is given.
    assert metrics["guard-flag-rate"]["successCondition"].endswith("<= 0.00001")
    assert _threshold(metrics["client-error-rate-increase"]["failureCondition"], ">") == 0.25
    assert {(m["interval"], m["count"], m["failureLimit"]) for m in metrics.values() if "prometheus" in m["provider"]} \
        == {("500ms", 7, 3)}
    assert ">= 11)" in metrics["error-rate"]["provider"]["prometheus"]["query"]
    assert docs["Rollout"][0]["spec"]["strategy"]["blueGreen"]["scaleDownDelaySeconds"] == 42


def test_default_image_is_the_repository_tagged_with_the_version(tmp_path: Path) -> None:
    docs = _render(tmp_path, image=None, namespace="ml-prod")
    image = docs["Rollout"][0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f":{VERSION}")
    assert {d["metadata"]["namespace"] for items in docs.values() for d in items} == {"ml-prod"}


@pytest.mark.parametrize(("edit", "field"), [
    (lambda raw: raw["thresholds"].update(max_error_rate=1.5), "thresholds.max_error_rate"),
    (lambda raw: raw["thresholds"].update(max_p99_latency_ms=900), "thresholds.max_p99_latency_ms"),
    (lambda raw: raw["analysis"].update(failure_limit=-1), "analysis.failure_limit"),
    (lambda raw: raw["analysis"].update(interval_seconds="soon"), "analysis.interval_seconds"),
    (lambda raw: raw.update(scale_down_delay_seconds=-5), "scale_down_delay_seconds"),
    (lambda raw: raw["pre_promotion"].update(golden_tags="smoke"), "pre_promotion.golden_tags"),
])
def test_a_bad_rollout_config_names_the_field(tmp_path: Path, edit, field: str) -> None:
    raw = yaml.safe_load(ROLLOUT_YAML.read_text(encoding="utf-8"))
    edit(raw)
    config = tmp_path / "rollout.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(InputError) as err:
        render_manifests(VERSION, IMAGE, tmp_path / "out", config)
    assert err.value.field == field
    assert str(config) in str(err.value) and field in str(err.value)
    assert not (tmp_path / "out").exists(), "nothing may be written for a bad config"


def test_bad_version_and_broken_yaml_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="version"):
        render_manifests("v1.3.0; rm -rf /", IMAGE, tmp_path / "out", ROLLOUT_YAML)
    broken = tmp_path / "rollout.yaml"
    broken.write_text("analysis: [unclosed\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_rollout_policy(broken)
    assert err.value.line is not None
    assert not (tmp_path / "out").exists()


def test_render_cli_uses_the_repository_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path) -> None:
    monkeypatch.setenv("LLMOPS_ROOT", str(repo_root))
    paths = render_cli("v2.0.0", tmp_path)
    assert [p.name for p in paths] == list(MANIFESTS)
    assert '"/models/v2.0.0"' in (tmp_path / "rollout.yaml").read_text(encoding="utf-8")


def test_the_commands_in_the_pods_exist_with_those_flags(docs, rollout) -> None:
    from llmops.cli.evals import eval_cmd
    from llmops.cli.serving import serve

    def flags(command: list[str]) -> set[str]:
        return {part for part in command if part.startswith("--")}

    def options(command) -> set[str]:
        return {opt for param in command.params for opt in getattr(param, "opts", [])}

    serve_cmd = rollout["spec"]["template"]["spec"]["containers"][0]["command"]
    assert flags(serve_cmd) <= options(serve)
    for metric in _metrics(docs).values():
        if "job" in metric["provider"]:
            command = metric["provider"]["job"]["spec"]["template"]["spec"]["containers"][0]["command"]
            assert flags(command) <= options(eval_cmd)
