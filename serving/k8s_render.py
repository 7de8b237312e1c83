"""Render Argo Rollouts manifests for one model version: the Kubernetes release target.

    llmops release v1.3.0 --target kubernetes --render build/k8s
    python -c "from serving.k8s_render import render_cli; print(render_cli('v1.3.0', 'build/k8s'))"

Writes into the output folder (then `kubectl apply -n llmops -f build/k8s`):

    rollout.yaml            Rollout, strategy.blueGreen: activeService/previewService, pre-promotion
                            analysis (probes job on the preview), post-promotion analysis
                            (Prometheus on the new pods), scaleDownDelaySeconds
    services.yaml           the active and the preview Service (two documents)
    analysis-metrics.yaml   AnalysisTemplate: error rate, p95 latency, guard-flag rate, 4xx rate increase
    analysis-probes.yaml    AnalysisTemplate: `llmops eval` smoke and safety cases as Jobs

or, with `workload: deployment` in values.yaml (a cluster without Argo Rollouts):

    services.yaml           the active Service
    deployment.yaml         apps/v1 Deployment of the same serving pod, rolling update, no analysis

Every rendered document is validated against its published schema before anything is written
(serving/k8s_validate.py: Kubernetes' own schemas for core kinds, the Argo Rollouts CRDs' for
Rollout and AnalysisTemplate, strict about unknown fields); a problem is an InputError (exit 2)
naming the file, the document and the field's path.

The rollout policy (analysis interval/count/failureLimit, thresholds, scale-down delay) is read
from `serving/rollout.yaml`, the file the local rollout controller reads, so both targets judge a
release by the same numbers. Its traffic steps (canary/linear) are not rendered: a blueGreen Rollout
switches the active Service all at once, and the post-promotion analysis is the one bake; canary
steps on Kubernetes need a traffic router (Istio, NGINX) this render does not assume.
Kubernetes-only settings (replicas, resources, Prometheus address, the models volume) live in
`serving/k8s/values.yaml`.

The templates use `[[ ]]` / `[% %]` / `[# #]` as Jinja delimiters so that Argo's own
`{{args.name}}` placeholders pass through verbatim, and every interpolated value goes through
the `q` filter (JSON, which is valid YAML) so no version, image or query can break the YAML.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmops.errors import InputError
from llmops.settings import Settings
from serving.k8s_validate import KUBERNETES_VERSION, ensure_valid
from serving.rollout import RolloutConfig, load_config

TEMPLATES_DIR = Path(__file__).with_name("k8s")
DEFAULT_VALUES = TEMPLATES_DIR / "values.yaml"
DEFAULT_ROLLOUT_CONFIG = Path(__file__).with_name("rollout.yaml")

# Output file -> template, in the order render_manifests returns them: templates and Services
# before the Rollout that references them, for anyone applying file by file.
MANIFESTS = {
    "analysis-metrics.yaml": "analysis-metrics.yaml.j2",
    "analysis-probes.yaml": "analysis-probes.yaml.j2",
    "services.yaml": "services.yaml.j2",
    "rollout.yaml": "rollout.yaml.j2",
}
# The same for `workload: deployment`: the plain Deployment and its Service.
DEPLOYMENT_MANIFESTS = {
    "services.yaml": "services.yaml.j2",
    "deployment.yaml": "deployment.yaml.j2",
}
WORKLOADS = {"rollout": MANIFESTS, "deployment": DEPLOYMENT_MANIFESTS}

# The gateway's per-colour series (serving/gateway/metrics.py) the analysis reads, the same ones the local
# controller's serving.rollout.parse_metrics reads: error rate = upstream errors / attempts,
# guard-flag rate = flagged / scanned completions, p95 from the upstream latency histogram, 4xx rate
# increase = the new pods' 4xx rate minus the other pods' (serving.rollout.stable_client_error_rate).
REQUESTS_TOTAL = "llmops_gateway_requests_total"
ERRORS_TOTAL = "llmops_gateway_upstream_errors_total"
LATENCY_BUCKET = "llmops_gateway_upstream_latency_seconds_bucket"
RESPONSES_TOTAL = "llmops_gateway_responses_total"
GUARD_FLAGS_TOTAL = "llmops_gateway_guard_flags_total"
# Argo fills this from `valueFrom.podTemplateHashValue: Latest`; Prometheus' pod-label relabelling
# turns the pod label rollouts-pod-template-hash into this series label. Selecting on it scopes
# every query to the new colour's pods.
POD_HASH_SELECTOR = 'rollouts_pod_template_hash="{{args.pod-template-hash}}"'
OLD_PODS_SELECTOR = 'rollouts_pod_template_hash!="{{args.pod-template-hash}}"'
CLIENT_ERRORS = 'status=~"4.."'

# Kubernetes object names and label values.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DURATION = re.compile(r"^\d+(ms|s|m|h)$")


class RolloutPolicy(BaseModel):
    """What the Kubernetes target takes from serving/rollout.yaml, in Argo's units."""

    model_config = ConfigDict(frozen=True)

    interval: str = Field(description="Argo duration between measurements, e.g. '5s'.")
    count: int = Field(ge=1, description="Measurements per analysis run.")
    failure_limit: int = Field(ge=0, description="Failed measurements tolerated before the run fails.")
    inconclusive_limit: int = Field(0, ge=0, description="Inconclusive measurements tolerated before the run is "
                                                         "Inconclusive (the Rollout pauses).")
    min_requests: int = Field(ge=1, description="Fewer requests in the query window: inconclusive.")
    error_rate: float = Field(ge=0, le=1, description="Max fraction of failed requests.")
    p95_latency_seconds: float = Field(gt=0, description="Max p95 request latency, seconds.")
    guard_flag_rate: float = Field(ge=0, le=1, description="Max guard flags per response.")
    client_error_rate_increase: float = Field(ge=0, le=1, description="Max 4xx rate of the new pods above the "
                                              "old pods' (serving/rollout.py measure).")
    golden_tags: tuple[str, ...] = Field(min_length=1, description="Eval tags of the golden probe job.")
    safety_tags: tuple[str, ...] = Field(min_length=1, description="Eval tags of the safety probe job.")
    scale_down_delay_seconds: int = Field(ge=0, description="Seconds the old colour stays warm.")


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: dict[str, str]
    limits: dict[str, str]


class KubernetesValues(BaseModel):
    """serving/k8s/values.yaml; each field is documented there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "llmops"
    workload: Literal["rollout", "deployment"] = "rollout"
    image_repository: str = "ghcr.io/llmops/llmops-serving"
    replicas: int = Field(default=2, ge=1)
    preview_replica_count: int = Field(default=1, ge=1)
    auto_promotion_enabled: bool = True
    run_as_user: int = Field(default=10001, ge=1)
    port: int = Field(default=8000, ge=1, le=65535)
    models_claim: str = "llmops-models"
    prometheus_address: str = "http://prometheus-operated.monitoring.svc:9090"
    query_window: str = "2m"
    api_key_secret: str = "llmops-api-key"
    registry_uri: str | None = None
    keys_secret: str = "llmops-keys"
    resources: Resources
    probe_resources: Resources

    @field_validator("name", "models_claim", "api_key_secret", "keys_secret")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        # The longest derived name is <name>-preview / <name>-metrics (8 more characters).
        if not _DNS_LABEL.match(value) or len(value) > 55:
            raise ValueError(f"{value!r} is not a DNS-1123 label of at most 55 characters")
        return value

    @field_validator("query_window")
    @classmethod
    def _window(cls, value: str) -> str:
        if not _DURATION.match(value):
            raise ValueError(f"{value!r} is not a PromQL duration like '2m'")
        return value


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", file=str(path)) from None
    except yaml.YAMLError as exc:
        line = exc.problem_mark.line + 1 if getattr(exc, "problem_mark", None) else None
        raise InputError(f"invalid YAML: {exc}", file=str(path), line=line) from None


def _validation_error(path: Path, exc: ValidationError) -> InputError:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return InputError(f"{first['msg']} (got {first.get('input')!r})", file=str(path), field=field)


def _duration(value: float) -> str:
    """Seconds -> an Argo duration: 30 -> '30s', 0.5 -> '500ms'."""
    millis = round(float(value) * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def load_rollout_policy(path: Path = DEFAULT_ROLLOUT_CONFIG) -> RolloutPolicy:
    """Read serving/rollout.yaml with the local controller's own loader and convert to Argo's units.

    Raises InputError naming the file, the line and the key (e.g. `analysis.failure_limit`).
    """
    return policy_from_config(load_config(Path(path)))


def policy_from_config(config: RolloutConfig) -> RolloutPolicy:
    """The Kubernetes view of a validated rollout config: one post-promotion run is one bake."""
    a, t = config.analysis, config.thresholds
    return RolloutPolicy(
        interval=_duration(a.interval_seconds), count=config.measurements_per_bake(),
        failure_limit=a.failure_limit, inconclusive_limit=a.inconclusive_limit, min_requests=a.min_requests,
        error_rate=t.max_error_rate,
        p95_latency_seconds=t.max_p95_latency_ms / 1000, guard_flag_rate=t.max_guard_flag_rate,
        client_error_rate_increase=t.max_client_error_rate_increase,
        golden_tags=tuple(config.pre_promotion.golden_tags), safety_tags=tuple(config.pre_promotion.safety_tags),
        # Argo takes whole seconds; round up so the old colour is never released early.
        scale_down_delay_seconds=math.ceil(config.scale_down_delay_seconds))


def load_values(path: Path = DEFAULT_VALUES) -> KubernetesValues:
    """Read serving/k8s/values.yaml (unknown keys are errors)."""
    path = Path(path)
    raw = _read_yaml(path)
    try:
        return KubernetesValues.model_validate(raw or {})
    except ValidationError as exc:
        raise _validation_error(path, exc) from None


def _number(value: float) -> str:
    """A plain decimal for expressions and PromQL: 1e-05 -> '0.00001' (no exponent to misparse)."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def analysis_queries(window: str, min_requests: int) -> dict[str, str]:
    """PromQL per analysis metric, scoped to the new pods by their pod-template hash.

    Each query is `and`-ed with "at least `min_requests` requests in the window": with fewer, the
    result is empty, which neither condition accepts, so the measurement is Inconclusive, the same
    rule as the local controller's `analysis.min_requests`.

    client-error-rate-increase: the new pods' 4xx rate minus the old pods' over the same window;
    with fewer than `min_requests` old-pod requests there (after a blueGreen switch the old pods
    get none), minus their rate over all their requests (the counters' current values), else
    minus 0. A colour with no 4xx series counts 0 4xx answers.
    """
    def rate(metric: str, selector: str = POD_HASH_SELECTOR) -> str:
        return f"sum(rate({metric}{{{selector}}}[{window}]))"

    enough = f"and on() (sum(increase({REQUESTS_TOTAL}{{{POD_HASH_SELECTOR}}}[{window}])) >= {min_requests})"
    new_4xx = f"({rate(REQUESTS_TOTAL, f'{POD_HASH_SELECTOR},{CLIENT_ERRORS}')} or on() vector(0))"
    old_4xx = f"({rate(REQUESTS_TOTAL, f'{OLD_PODS_SELECTOR},{CLIENT_ERRORS}')} or on() vector(0))"
    old_window = (f"(({old_4xx} / {rate(REQUESTS_TOTAL, OLD_PODS_SELECTOR)}) and on() "
                  f"(sum(increase({REQUESTS_TOTAL}{{{OLD_PODS_SELECTOR}}}[{window}])) >= {min_requests}))")
    old_total = f"sum({REQUESTS_TOTAL}{{{OLD_PODS_SELECTOR}}})"
    old_history = (f"(((sum({REQUESTS_TOTAL}{{{OLD_PODS_SELECTOR},{CLIENT_ERRORS}}}) or on() vector(0)) / "
                   f"{old_total}) and on() ({old_total} >= {min_requests}))")
    return {
        "error-rate": f"({rate(ERRORS_TOTAL)} / {rate(REQUESTS_TOTAL)}) {enough}",
        "p95-latency": f"histogram_quantile(0.95, sum by (le) (rate({LATENCY_BUCKET}{{{POD_HASH_SELECTOR}}}"
                       f"[{window}]))) {enough}",
        "guard-flag-rate": f"({rate(GUARD_FLAGS_TOTAL)} / {rate(RESPONSES_TOTAL)}) {enough}",
        "client-error-rate-increase": f"(({new_4xx} / {rate(REQUESTS_TOTAL)}) - on() ({old_window} or on() "
                                      f"{old_history} or on() vector(0))) {enough}",
    }


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        variable_start_string="[[", variable_end_string="]]",
        block_start_string="[%", block_end_string="%]",
        comment_start_string="[#", comment_end_string="#]",
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML: quoting is the `q` filter's job
    )
    # JSON is a subset of YAML 1.2 flow style: strings come out double-quoted and escaped, dicts and
    # lists as flow collections, booleans as true/false.
    env.filters["q"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


def render_documents(version: str, image: str, rollout: RolloutPolicy, values: KubernetesValues,
                     namespace: str = "llmops", validate: bool = True,
                     kubernetes_version: str | None = None) -> dict[str, str]:
    """Output file name -> rendered YAML text; pure (writes nothing).

    validate: check every document against its schema (serving/k8s_validate.py) for Kubernetes
    `kubernetes_version` (default: k8s_validate.KUBERNETES_VERSION); a problem raises InputError.
    """
    if not _LABEL_VALUE.match(version):
        raise InputError(f"version {version!r} is not a valid Kubernetes label value "
                         "(letters, digits, '-', '_', '.', at most 63)", field="version")
    if not _DNS_LABEL.match(namespace):
        raise InputError(f"namespace {namespace!r} is not a DNS-1123 label", field="namespace")
    if not image or any(ch.isspace() for ch in image):
        raise InputError(f"image {image!r} is not an image reference", field="image")
    name = values.name
    active, preview = f"{name}-active", f"{name}-preview"
    selector = {"app.kubernetes.io/name": name}
    common = {**selector, "app.kubernetes.io/part-of": "llmops", "app.kubernetes.io/managed-by": "llmops-release"}
    thresholds = {"error-rate": rollout.error_rate, "p95-latency": rollout.p95_latency_seconds,
                  "guard-flag-rate": rollout.guard_flag_rate,
                  "client-error-rate-increase": rollout.client_error_rate_increase}
    queries = analysis_queries(values.query_window, rollout.min_requests)
    endpoint = f"http://{{{{args.service-name}}}}.{{{{args.namespace}}}}.svc:{values.port}"
    # Gated on the floors and on production's recorded eval (`--against production`: max_drop, same cases);
    # exit 3 (no registry, or not comparable) fails the Job like a failed gate.
    probe = ["llmops", "eval", "--endpoint", endpoint, "--against", "production"]
    context = {
        "name": name, "namespace": namespace, "version": version, "image": image, "values": values.model_dump(),
        "rollout": rollout, "active_service": active, "preview_service": preview,
        "metrics_template": f"{name}-metrics", "probes_template": f"{name}-probes",
        "services": [active, preview] if values.workload == "rollout" else [active],
        "selector_labels": selector, "common_labels": common,
        "pod_labels": {**common, "app.kubernetes.io/version": version},
        "serve_command": ["llmops", "serve", "--model", f"/models/{version}", "--host", "0.0.0.0",
                          "--port", str(values.port)],
        # Both conditions need a sample: with no traffic (an empty vector, or 0/0 = NaN) neither
        # matches, so Argo marks the measurement Inconclusive and pauses for a human.
        "metrics": [{"name": key, "query": queries[key],
                     "success": f"len(result) > 0 && result[0] <= {_number(thresholds[key])}",
                     "failure": f"len(result) > 0 && result[0] > {_number(thresholds[key])}"}
                    for key in thresholds],
        # The golden subset and the safety probes of rollout.yaml's pre_promotion; --out under /tmp because the image's
        # filesystem may be read-only.
        "probes": [
            {"name": "golden", "command": [*probe, "--tags", ",".join(rollout.golden_tags), "--out", "/tmp/eval-golden"]},
            {"name": "safety", "command": [*probe, "--tags", ",".join(rollout.safety_tags), "--out", "/tmp/eval-safety"]},
        ],
    }
    env = _environment()
    manifests = WORKLOADS[values.workload]
    rendered = {out: env.get_template(template).render(context) for out, template in manifests.items()}
    for out, text in rendered.items():
        # A template bug must fail here, before anything is written.
        try:
            docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except yaml.YAMLError as exc:
            raise RuntimeError(f"template {manifests[out]} rendered invalid YAML: {exc}") from exc
        if not docs:
            raise RuntimeError(f"template {manifests[out]} rendered no document")
    if validate:
        ensure_valid(rendered, kubernetes_version or KUBERNETES_VERSION)
    return rendered


def render_manifests(version: str, image: str | None, out_dir: Path, rollout_config: Path | RolloutConfig,
                     namespace: str = "llmops", values: Path | KubernetesValues = DEFAULT_VALUES,
                     validate: bool = True, kubernetes_version: str | None = None) -> list[Path]:
    """Render the manifests of `version` into `out_dir` and return the written paths (apply order).

    image: full image reference; None means `<values.image_repository>:<version>`.
    rollout_config: serving/rollout.yaml, or a RolloutConfig already loaded by serving.rollout.load_config.
    Every file is rendered, parsed and (with `validate`) schema-checked before the first is written,
    and each is written atomically.
    """
    policy = (load_rollout_policy(rollout_config) if isinstance(rollout_config, str | Path)
              else policy_from_config(rollout_config))
    vals = values if isinstance(values, KubernetesValues) else load_values(values)
    rendered = render_documents(version, image or f"{vals.image_repository}:{version}", policy, vals, namespace,
                                validate=validate, kubernetes_version=kubernetes_version)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for out, text in rendered.items():
        target = out_dir / out
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{out}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
        written.append(target)
    return written


def render_cli(version: str, out_dir: Path | str, image: str | None = None, namespace: str = "llmops",
               validate: bool = True, kubernetes_version: str | None = None) -> list[Path]:
    """`llmops release VERSION --target kubernetes --render DIR`: the repository's rollout.yaml and values,
    schema-validated before anything is written (an invalid manifest: InputError, exit 2)."""
    root = Settings.load().root
    return render_manifests(version, image, Path(out_dir), root / "serving" / "rollout.yaml", namespace,
                            values=root / "serving" / "k8s" / "values.yaml", validate=validate,
                            kubernetes_version=kubernetes_version)
