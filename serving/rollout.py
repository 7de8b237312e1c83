"""The release controller: blue/green with analysis, abort, promotion, scale-down delay and rollback.

    llmops release v1.3.0                  # or a registry version (3) or alias (candidate)
    llmops rollback --reason "p95 doubled after v1.3.0"
    llmops status

A release (Argo Rollouts' blueGreen vocabulary, SageMaker's traffic shifting) runs here, in the
CLI process, and drives the gateway (serving/gateway.py) through its admin API:

 1. resolve VERSION in the registry and re-hash every file (a corrupted artifact: exit 2, the
    gateway is not touched). A git-tag-like name `vX.Y.Z` that is not a registry version means
    "the current `candidate`"; the tag goes into the audit log and the promotion record.
 2. load it into the idle colour: the preview, 0 % of traffic.
 3. pre-promotion analysis against the preview's own URL: /readyz, the golden cases
    (serving/rollout.yaml `golden_tags`) and the safety probes (`safety_tags`), gated by
    evals/thresholds.yaml against the active version measured in the same run.
 4. traffic steps (all-at-once, canary or linear); after each, a bake of `bake_seconds` during
    which the gateway's Prometheus metrics of the preview colour are measured every
    `interval_seconds`: error rate, p95 latency and guard-flag rate against the thresholds.
    More than `failure_limit` failed measurements, or a dead preview worker, fail the step.
 5. any failure aborts at once: 100 % back to the stable colour, `release.abort` in the audit
    log with why, exit 1. Success: the gateway makes the preview stable (the old colour stays
    warm for `scale_down_delay_seconds`), `production` moves to the version, `release.promote`.

The last analysis (pass or fail, with every measurement) is written to
`<home>/gateway/last_analysis.json` and shown by `llmops status`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmops.errors import GateFailed, InputError
from llmops.files import atomic_write_json
from llmops.settings import Settings

DEFAULT_CONFIG = Path(__file__).with_name("rollout.yaml")
TAG = re.compile(r"^v\d+\.\d+\.\d+([.+-][0-9A-Za-z.+-]+)?$")


# ---- config ------------------------------------------------------------------------------------
class Analysis(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval_seconds: float = Field(5, gt=0)
    """Seconds between two measurements of the preview's metrics."""
    count: int | None = Field(None, ge=1)
    """Measurements per bake; None = bake_seconds // interval_seconds (at least 1)."""
    failure_limit: int = Field(1, ge=0)
    """Failed measurements tolerated per bake; one more aborts."""
    min_requests: int = Field(5, ge=1)
    """Fewer preview requests in a window make the measurement inconclusive."""


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_error_rate: float = Field(0.02, ge=0, le=1)
    """Failed upstream attempts / attempts of the preview colour."""
    max_p95_latency_ms: float = Field(1500, gt=0)
    """p95 of the preview's upstream latency, ms."""
    max_guard_flag_rate: float = Field(0.05, ge=0, le=1)
    """Flagged completions / completions of the preview colour."""


class PrePromotion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    golden_tags: list[str] = Field(default_factory=lambda: ["smoke"])
    """Eval case tags of the golden subset."""
    safety_tags: list[str] = Field(default_factory=lambda: ["safety", "refusal"])
    """Eval case tags of the safety probes."""
    ready_timeout_seconds: float = Field(180, gt=0)
    """Seconds the preview may take to become ready."""
    thresholds: str = "evals/thresholds.yaml"
    """The eval gates (absolute floors and max_drop), relative to the repository root or absolute."""


class RolloutConfig(BaseModel):
    """serving/rollout.yaml; each field is documented there."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["all-at-once", "canary", "linear"] = "canary"
    canary_percent: int = Field(10, ge=1, le=99)
    linear_step_percent: int = Field(25, ge=1, le=100)
    bake_seconds: float = Field(30, gt=0)
    analysis: Analysis = Field(default_factory=Analysis)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    pre_promotion: PrePromotion = Field(default_factory=PrePromotion)
    scale_down_delay_seconds: float = Field(600, ge=0)

    @model_validator(mode="after")
    def _count_fits_bake(self) -> RolloutConfig:
        count = self.analysis.count
        if count is not None and count * self.analysis.interval_seconds > self.bake_seconds + 1e-9:
            raise ValueError(f"analysis.count ({count}) x interval_seconds ({self.analysis.interval_seconds:g}) "
                             f"exceeds bake_seconds ({self.bake_seconds:g})")
        return self

    def steps(self) -> list[int]:
        """Preview weights in %, in order; the last is always 100."""
        if self.strategy == "all-at-once":
            return [100]
        if self.strategy == "canary":
            return [self.canary_percent, 100]
        step = self.linear_step_percent
        return sorted({*range(step, 100, step), 100})

    def measurements_per_bake(self) -> int:
        return self.analysis.count or max(1, int(self.bake_seconds // self.analysis.interval_seconds))


def load_config(path: str | Path | None = None) -> RolloutConfig:
    """Read and validate a rollout config (default serving/rollout.yaml); InputError names file, line, key."""
    from llmops.config_files import load_validated_yaml

    return load_validated_yaml(Path(path or DEFAULT_CONFIG), RolloutConfig)


# ---- metrics analysis --------------------------------------------------------------------------
@dataclass
class ColourSample:
    """Cumulative counters of one colour read from the gateway's /metrics at one moment."""

    requests: float = 0.0
    errors: float = 0.0
    responses: float = 0.0
    guard_flags: float = 0.0
    tokens: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le (s) -> cumulative count


def parse_metrics(text: str, colour: str) -> ColourSample:
    from prometheus_client.parser import text_string_to_metric_families

    out = ColourSample()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("colour") != colour:
                continue
            if s.name == "llmops_gateway_requests_total":
                out.requests += s.value
            elif s.name == "llmops_gateway_upstream_errors_total":
                out.errors += s.value
            elif s.name == "llmops_gateway_responses_total":
                out.responses += s.value
            elif s.name == "llmops_gateway_guard_flags_total":
                out.guard_flags += s.value
            elif s.name == "llmops_gateway_tokens_total":
                out.tokens += s.value
            elif s.name == "llmops_gateway_upstream_latency_seconds_bucket":
                out.buckets[float(s.labels["le"])] = s.value
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets {le: count}: linear inside the bucket."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return lower_bound  # beyond the largest finite bucket: its bound, as Prometheus does
            width = count - lower_count
            return lower_bound + (le - lower_bound) * ((rank - lower_count) / width if width else 1.0)
        lower_bound, lower_count = le, count
    return lower_bound


@dataclass
class Measurement:
    at: float
    requests: int
    error_rate: float | None
    p95_latency_ms: float | None
    guard_flag_rate: float | None
    verdict: Literal["pass", "fail", "inconclusive"]
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("at", "requests", "error_rate", "p95_latency_ms", "guard_flag_rate",
                                               "verdict", "reasons")}


def measure(before: ColourSample, after: ColourSample, thresholds: Thresholds, min_requests: int,
            at: float | None = None) -> Measurement:
    """One measurement over the window between two samples of the preview colour."""
    requests = after.requests - before.requests
    errors = after.errors - before.errors
    responses = after.responses - before.responses
    flags = after.guard_flags - before.guard_flags
    window = {le: after.buckets.get(le, 0.0) - before.buckets.get(le, 0.0) for le in after.buckets}
    p95 = histogram_quantile(0.95, window)
    error_rate = errors / requests if requests else None
    flag_rate = flags / responses if responses else None
    p95_ms = round(p95 * 1000, 2) if p95 is not None else None
    reasons = []
    if requests < min_requests:
        return Measurement(at or time.time(), int(requests), error_rate, p95_ms, flag_rate, "inconclusive",
                           [f"{int(requests)} requests < min_requests {min_requests}"])
    if error_rate is not None and error_rate > thresholds.max_error_rate:
        reasons.append(f"error rate {error_rate:.3f} > {thresholds.max_error_rate:g} ({int(errors)}/{int(requests)})")
    if p95_ms is not None and p95_ms > thresholds.max_p95_latency_ms:
        reasons.append(f"p95 latency {p95_ms:.0f} ms > {thresholds.max_p95_latency_ms:g} ms")
    if flag_rate is not None and flag_rate > thresholds.max_guard_flag_rate:
        reasons.append(f"guard-flag rate {flag_rate:.3f} > {thresholds.max_guard_flag_rate:g} "
                       f"({int(flags)}/{int(responses)})")
    return Measurement(at or time.time(), int(requests), error_rate, p95_ms, flag_rate,
                       "fail" if reasons else "pass", reasons)


def _request_errors(report: Any) -> set[str]:
    return {c["id"] for c in report.cases if any(a["type"] == "request" for a in c.get("assertions", []))}


# ---- the controller ----------------------------------------------------------------------------
class ReleaseAborted(GateFailed):
    """An analysis failed; traffic is back on the stable colour. Exit 1."""


@dataclass
class ReleaseResult:
    version: str
    colour: str
    promoted: bool
    analysis: dict[str, Any]


def resolve_release_ref(registry: Any, ref: str) -> tuple[str, str | None]:
    """(version, tag): a registry version or alias as is; an unknown `vX.Y.Z` is the `candidate`."""
    if ref in registry.versions() or ref in registry.aliases():
        return registry.resolve(ref), None
    if TAG.match(ref):
        if "candidate" not in registry.aliases():
            raise InputError(f"{ref!r} is a release tag, and a tag releases the `candidate` alias, which is not set "
                             f"in {registry.root}; register a candidate first (llmops pipeline merge)")
        return registry.resolve("candidate"), ref
    return registry.resolve(ref), None  # raises InputError listing what exists


def verified_version(registry: Any, ref: str) -> tuple[Any, str | None]:
    """(ModelVersion, tag) after re-hashing every file; IntegrityError (exit 2) names a corrupted one."""
    version, tag = resolve_release_ref(registry, ref)
    return registry.get(version), tag


@contextlib.contextmanager
def release_lock(settings: Settings) -> Iterator[None]:
    """One release or rollback at a time per home; a second one is refused (exit 2), not queued."""
    path = settings.home / "gateway" / "release.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError("another release or rollback is running under this home", file=str(path)) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def last_analysis_path(settings: Settings) -> Path:
    return settings.home / "gateway" / "last_analysis.json"


class Controller:
    def __init__(self, settings: Settings, config: RolloutConfig, client: Any, principal: Any,
                 log: Any = print) -> None:
        self.settings, self.cfg, self.gw, self.principal, self.log = settings, config, client, principal, log
        self.record: dict[str, Any] = {"phases": []}

    def audit(self, action: str, target: str, details: dict[str, Any], reason: str = "") -> None:
        from governance.audit import audit_event

        audit_event(action, actor=self.principal.name, role=self.principal.role, target=target,
                    details=details, reason=reason, settings=self.settings)

    def save_record(self) -> None:
        atomic_write_json(last_analysis_path(self.settings), self.record)

    # -- pre-promotion --
    def pre_promotion(self, preview_url: str, stable_url: str | None, version: str) -> list[str]:
        """Failures of the pre-promotion analysis (empty: passed). Every check runs for real."""
        import httpx

        from evals.runner import run_eval

        failures: list[str] = []
        phase: dict[str, Any] = {"phase": "pre-promotion", "checks": {}}
        self.record["phases"].append(phase)
        try:
            ready = httpx.get(preview_url + "/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            ready = False
        phase["checks"]["health"] = {"passed": ready}
        if not ready:
            return [f"preview {preview_url} does not answer /readyz"]
        root = self.settings.root
        gates = root / self.cfg.pre_promotion.thresholds  # an absolute path stays absolute
        for name, tags in (("golden", self.cfg.pre_promotion.golden_tags),
                           ("safety", self.cfg.pre_promotion.safety_tags)):
            kwargs = {"tags": tags, "workers": 2, "timeout": 60.0, "retries": 0, "thresholds_path": gates}
            baseline = (run_eval(stable_url, root / "evals" / "cases", root / "prompts",
                                 model_version=f"stable-{time.time()}", **kwargs) if stable_url else None)
            report = run_eval(preview_url, root / "evals" / "cases", root / "prompts", baseline=baseline,
                              model_version=f"preview-v{version}-{time.time()}", **kwargs)
            metrics = {k: {"head": m.head, "base": m.base, "threshold": m.threshold, "passed": m.passed}
                       for k, m in report.metrics.items()}
            # A request the active version also fails (e.g. a prompt longer than a tiny model's
            # window, 400 on both) is the model's limit, already in the pass rate; one that fails
            # only on the preview is a broken version.
            errors = sorted(_request_errors(report) - (_request_errors(baseline) if baseline else set()))
            passed = report.passed and not errors
            phase["checks"][name] = {"passed": passed, "tags": tags, "metrics": metrics,
                                     "cases": len(report.cases), "request_errors_only_on_preview": errors}
            if errors:
                failures.append(f"{name}: {len(errors)} request(s) failed only on the preview: "
                                f"{', '.join(errors[:5])}")
            for key, m in report.metrics.items():
                if m.passed is False:
                    failures.append(f"{name}: {key} {m.head:.3f} < floor {m.threshold:.3f} (active: {m.base})")
        return failures

    # -- bake --
    def bake(self, colour: str, weight: int) -> list[str]:
        """Measure the preview for one bake; failures (empty: passed)."""
        a = self.cfg.analysis
        phase: dict[str, Any] = {"phase": f"bake {weight}%", "measurements": []}
        self.record["phases"].append(phase)
        before = parse_metrics(self.gw.metrics_text(), colour)
        failed = 0
        for _ in range(self.cfg.measurements_per_bake()):
            deadline = time.monotonic() + a.interval_seconds
            while time.monotonic() < deadline:  # watch the worker's health between measurements
                status = self.gw.status()
                if not status["colours"][colour]["up"]:
                    phase["measurements"].append({"at": time.time(), "verdict": "fail",
                                                  "reasons": [f"the {colour} worker is down"]})
                    return [f"bake {weight}%: the preview ({colour}) worker is down"]
                time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
            after = parse_metrics(self.gw.metrics_text(), colour)
            m = measure(before, after, self.cfg.thresholds, a.min_requests)
            before = after
            phase["measurements"].append(m.to_dict())
            self.log(f"  bake {weight}%: {m.verdict} ({m.requests} req, error rate {m.error_rate}, "
                     f"p95 {m.p95_latency_ms} ms, guard {m.guard_flag_rate}) {'; '.join(m.reasons)}")
            if m.verdict == "fail":
                failed += 1
                if failed > a.failure_limit:
                    return [f"bake {weight}%: {failed} failed measurements > failure_limit {a.failure_limit}: "
                            + "; ".join(m.reasons)]
        return []

    def abort(self, stable: str | None, preview: str, version: str, reasons: list[str], tag: str | None) -> None:
        if stable is not None:
            self.gw.rollback(stable, reason="release aborted: " + "; ".join(reasons))
        else:
            with contextlib.suppress(Exception):
                self.gw.stop(preview, reason="first release aborted")
        self.record.update(verdict="fail", reasons=reasons, finished=time.time())
        self.save_record()
        self.audit("release.abort", "production", {"version": version, "tag": tag, "colour": preview,
                                                    "stable": stable, "analysis": self.record["phases"]},
                   reason="; ".join(reasons))
        raise ReleaseAborted(f"release of version {version} aborted, traffic is on {stable or 'no colour'}: "
                             + "; ".join(reasons))

    def release(self, ref: str, *, fault: str | None = None) -> ReleaseResult:
        from llmops.registry import Registry

        registry = Registry(self.settings.registry_dir)
        mv, tag = verified_version(registry, ref)
        status = self.gw.status()
        stable = status["stable"]
        if stable is not None and status["colours"][stable]["version"] == mv.version:
            raise InputError(f"version {mv.version} is already active on {stable}")
        preview = "green" if stable == "blue" else "blue"
        self.record.update(version=mv.version, tag=tag, ref=ref, colour=preview, stable=stable,
                           started=time.time(), config=self.cfg.model_dump())
        self.audit("release.start", "production", {"version": mv.version, "tag": tag, "ref": ref,
                                                    "colour": preview, "stable": stable,
                                                    "strategy": self.cfg.strategy, "fault": fault})
        self.log(f"release version {mv.version}{f' (tag {tag})' if tag else ''}: loading into {preview} (preview)")
        try:
            status = self.gw.load(preview, mv.version, reason=f"release {ref}", fault=fault, tag=tag)
        except (InputError, RuntimeError) as exc:
            self.abort(stable, preview, mv.version, [f"loading the preview failed: {exc}"], tag)
        stable_url = status["colours"][stable]["url"] if stable else None
        failures = self.pre_promotion(status["colours"][preview]["url"], stable_url, mv.version)
        self.log(f"pre-promotion analysis: {'passed' if not failures else 'FAILED: ' + '; '.join(failures)}")
        if failures:
            self.abort(stable, preview, mv.version, failures, tag)
        steps = self.cfg.steps() if stable else [100]
        for weight in steps:
            weights = {preview: weight, stable: 100 - weight} if stable else {preview: 100}
            self.gw.weights(weights, reason=f"release {ref}: step {weight}%")
            failures = self.bake(preview, weight)
            if failures:
                self.abort(stable, preview, mv.version, failures, tag)
        self.gw.promote(preview, self.cfg.scale_down_delay_seconds, reason=f"release {ref} promoted")
        registry.set_alias("production", mv.version, reason=f"release {ref}" + (f" (tag {tag})" if tag else ""),
                           actor=self.principal.name)
        self.record.update(verdict="pass", reasons=[], finished=time.time())
        self.save_record()
        self.audit("release.promote", "production", {"version": mv.version, "tag": tag, "colour": preview,
                                                      "previous_colour": stable,
                                                      "scale_down_delay_seconds": self.cfg.scale_down_delay_seconds,
                                                      "analysis": self.record["phases"]})
        self.log(f"promoted version {mv.version} on {preview}; {stable or 'no colour'} stays warm for "
                 f"{self.cfg.scale_down_delay_seconds:g} s")
        return ReleaseResult(mv.version, preview, True, self.record)


def release(ref: str, *, settings: Settings | None = None, config: RolloutConfig | str | Path | None = None,
            gateway_url: str | None = None, fault: str | None = None, log: Any = print) -> ReleaseResult:
    """`llmops release REF`: role check ("release"), then the whole blue/green release. Raises InputError
    (exit 2) for bad input or a refused role, ReleaseAborted (exit 1) when an analysis fails."""
    from governance.policy import authorize
    from serving.gateway import GatewayClient

    settings = settings or Settings.load()
    principal = authorize("release", target="production", settings=settings)
    from llmops.registry import Registry

    cfg = config if isinstance(config, RolloutConfig) else load_config(config)
    verified_version(Registry(settings.registry_dir), ref)  # refuse a corrupted artifact before any change
    with release_lock(settings):
        client = GatewayClient(gateway_url, settings)
        try:
            return Controller(settings, cfg, client, principal, log).release(ref, fault=fault)
        finally:
            client.close()


def rollback(*, reason: str, to: str | None = None, settings: Settings | None = None,
             gateway_url: str | None = None, log: Any = print) -> dict[str, Any]:
    """`llmops rollback`: traffic to the previous colour (or `to`, loaded first when not warm), the
    `production` alias back, an audit entry. Returns {"colour", "version", "switch_s", "loaded"}."""
    from governance.audit import audit_event
    from governance.policy import authorize
    from llmops.registry import Registry
    from serving.gateway import GatewayClient, other

    if not reason.strip():
        raise InputError("a rollback needs --reason", field="reason")
    settings = settings or Settings.load()
    principal = authorize("rollback", target="production", settings=settings)
    registry = Registry(settings.registry_dir)
    with release_lock(settings):
        client = GatewayClient(gateway_url, settings)
        try:
            status = client.status()
            stable = status["stable"]
            if stable is None:
                raise InputError("the gateway has no stable colour to roll back from")
            if to is None:
                target = status["preview"] or other(stable)
                version = status["colours"][target]["version"] or registry.aliases().get("previous")
                if version is None:
                    raise InputError("nothing to roll back to: no other colour and no `previous` alias; use --to")
            else:
                version = registry.resolve(to)
                target = next((c for c in ("blue", "green") if c != stable
                               and status["colours"][c]["version"] == version), other(stable))
            cs = status["colours"][target]
            loaded = False
            if not (cs["running"] and cs["up"] and cs["version"] == version):
                log(f"version {version} is not warm on {target}: loading it first")
                registry.get(version)  # verify checksums before it gets traffic
                client.load(target, version, reason=f"rollback: {reason}")
                loaded = True
            started = time.perf_counter()
            client.rollback(target, reason=reason)
            switch_s = time.perf_counter() - started
        finally:
            client.close()
    if registry.aliases().get("production") != version:
        registry.set_alias("production", version, reason=f"rollback: {reason}", actor=principal.name)
    audit_event("rollback", actor=principal.name, role=principal.role, target="production",
                details={"from_colour": stable, "from_version": status["colours"][stable]["version"],
                         "to_colour": target, "to_version": version, "loaded": loaded,
                         "switch_s": round(switch_s, 4)}, reason=reason, settings=settings)
    log(f"traffic on {target} (version {version}) in {switch_s * 1000:.0f} ms; production -> {version}")
    return {"colour": target, "version": version, "switch_s": switch_s, "loaded": loaded}


def status_report(settings: Settings | None = None, gateway_url: str | None = None) -> dict[str, Any]:
    """What `llmops status` prints: the live gateway (or its saved state when it is down), aliases,
    their history and the last analysis."""
    from llmops.registry import Registry
    from serving.gateway import GatewayClient, load_state, state_path

    settings = settings or Settings.load()
    registry = Registry(settings.registry_dir)
    out: dict[str, Any] = {"aliases": registry.aliases(), "alias_history": registry.alias_history()[-10:]}
    try:
        client = GatewayClient(gateway_url, settings, timeout=5)
        try:
            out["gateway"], out["gateway_live"] = client.status(), True
        finally:
            client.close()
    except (InputError, RuntimeError) as exc:
        out["gateway"] = load_state(state_path(settings)).model_dump(by_alias=True)
        out["gateway_live"], out["gateway_error"] = False, str(exc)
    path = last_analysis_path(settings)
    out["last_analysis"] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    return out


def bench_rollback(gateway_url: str, *, settings: Settings | None = None, users: int = 4,
                   load_s: float = 2.0) -> dict[str, Any]:
    """Under load (TrafficLoop), roll back from the stable colour to the warm other one and measure the
    time from the call to the first moment after which every new request lands on the target colour.
    Needs both colours warm. Returns seconds and the failed-request count."""
    from serving.gateway import GatewayClient, TrafficLoop, other

    settings = settings or Settings.load()
    client = GatewayClient(gateway_url, settings)
    try:
        status = client.status()
        stable = status["stable"]
        if stable is None or not status["colours"][other(stable)]["up"]:
            raise InputError("bench rollback needs a stable colour and a warm other colour (run a release first)")
        target = other(stable)
        with TrafficLoop(gateway_url, users=users) as load:
            time.sleep(load_s)
            called = time.monotonic()
            result = rollback(reason="bench rollback", settings=settings, gateway_url=gateway_url,
                              log=lambda *_: None)
            time.sleep(load_s)
        on_target = load.all_on(target, called)
        return {"from": stable, "to": result["colour"], "command_s": round(result["switch_s"], 4),
                "traffic_s": round(on_target - called, 4) if on_target is not None else None,
                "requests": len(load.records), "failed": load.failed, "users": users}
    finally:
        client.close()
