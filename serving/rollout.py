"""The release policy and its analysis: serving/rollout.yaml's model and the measurement of one bake.

    llmops release v1.3.0        # the release job (llmops/jobs/release.py) reads this config

Config: RolloutConfig (strategy, traffic steps, bake, analysis cadence, thresholds, pre-promotion
checks, scale-down delay), validated from serving/rollout.yaml by load_config. Analysis, pure
functions of the gateway's Prometheus text: parse_metrics reads one colour's counters and latency
histogram, histogram_quantile is Prometheus' quantile over cumulative buckets, and measure judges
the window between two samples against the thresholds (pass, fail or inconclusive).

The release controller that drives the gateway, the registry, the role policy, the audit log and
the evals with them (`llmops release`, `llmops rollback`, `llmops status`) is the job in
llmops/jobs/release.py; serving/k8s_render.py renders the same policy for Argo Rollouts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmops.config_files import load_validated_yaml

DEFAULT_CONFIG = Path(__file__).with_name("rollout.yaml")


# ---- config ------------------------------------------------------------------------------------
class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests_per_second: float = Field(2.0, ge=0)
    """Probe requests per second to the preview worker during each bake; 0 = none."""
    max_tokens: int = Field(16, ge=1, le=512)
    """max_tokens of each probe request."""
    questions: list[str] = Field(default_factory=lambda: [
        "How do I reverse a list in Python?", "What does the `with` statement do?",
        "How do I read a file line by line?"], min_length=1)
    """User messages the probes send through /v1/chat/completions (the served prompt), in turn."""


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
    inconclusive_limit: int = Field(0, ge=0)
    """Inconclusive measurements tolerated per bake; one more aborts (Argo: inconclusiveLimit)."""
    probe: Probe = Field(default_factory=lambda: Probe())
    """The controller's own chat requests to the preview during each bake."""


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_error_rate: float = Field(0.02, ge=0, le=1)
    """Failed upstream attempts / attempts of the preview colour."""
    max_p95_latency_ms: float = Field(1500, gt=0)
    """p95 of the preview's upstream latency, ms."""
    max_guard_flag_rate: float = Field(0.05, ge=0, le=1)
    """Flagged completions / completions of the preview colour."""
    max_client_error_rate_increase: float = Field(0.05, ge=0, le=1)
    """How far the preview's 4xx rate may exceed the stable colour's (see `measure`)."""


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
    return load_validated_yaml(Path(path or DEFAULT_CONFIG), RolloutConfig)


# ---- metrics analysis --------------------------------------------------------------------------
@dataclass
class ColourSample:
    """Cumulative counters of one colour read from the gateway's /metrics at one moment, and the 4xx
    counters of the other colour (`peer_*`: the stable one when this is the preview)."""

    requests: float = 0.0
    errors: float = 0.0
    client_errors: float = 0.0  # attempts the worker answered with a 4xx status
    peer_requests: float = 0.0
    peer_client_errors: float = 0.0
    responses: float = 0.0
    guard_flags: float = 0.0
    tokens: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le (s) -> cumulative count


def parse_metrics(text: str, colour: str) -> ColourSample:
    from prometheus_client.parser import text_string_to_metric_families

    out = ColourSample()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            client_error = s.labels.get("status", "").startswith("4")
            if s.labels.get("colour") not in (None, colour):
                if s.name == "llmops_gateway_requests_total":
                    out.peer_requests += s.value
                    out.peer_client_errors += s.value if client_error else 0.0
                continue
            if s.labels.get("colour") != colour:
                continue
            if s.name == "llmops_gateway_requests_total":
                out.requests += s.value
                out.client_errors += s.value if client_error else 0.0
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
    client_error_rate: float | None = None
    """The preview's 4xx rate in the window."""
    stable_client_error_rate: float | None = None
    """The 4xx rate it was compared with (see `measure`)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("at", "requests", "error_rate", "p95_latency_ms", "guard_flag_rate",
                                               "client_error_rate", "stable_client_error_rate", "verdict",
                                               "reasons")}


def stable_client_error_rate(before: ColourSample, after: ColourSample, min_requests: int) -> float:
    """The stable colour's 4xx rate that the preview's is compared with: over the window when it
    had `min_requests` there, else over its whole history in `after` (the last step gives it no
    traffic), else 0 (a first release: no stable colour has answered anything)."""
    requests = after.peer_requests - before.peer_requests
    if requests >= min_requests:
        return (after.peer_client_errors - before.peer_client_errors) / requests
    if after.peer_requests >= min_requests:
        return after.peer_client_errors / after.peer_requests
    return 0.0


def measure(before: ColourSample, after: ColourSample, thresholds: Thresholds, min_requests: int,
            at: float | None = None) -> Measurement:
    """One measurement over the window between two samples of the preview colour.

    Fails when the error rate, the p95 latency or the guard-flag rate is over its threshold, or
    when the preview's 4xx rate exceeds the stable colour's (stable_client_error_rate) by more than
    `max_client_error_rate_increase`: a version that refuses requests the stable one serves. 4xx
    answers that every version gives (a client's bad requests) cancel out. The gateway's own 401,
    413 and 429 (keys, body cap, rate limit at its front door) never reach a colour, so they are
    in neither rate."""
    requests = after.requests - before.requests
    errors = after.errors - before.errors
    client_errors = after.client_errors - before.client_errors
    responses = after.responses - before.responses
    flags = after.guard_flags - before.guard_flags
    window = {le: after.buckets.get(le, 0.0) - before.buckets.get(le, 0.0) for le in after.buckets}
    p95 = histogram_quantile(0.95, window)
    error_rate = errors / requests if requests else None
    flag_rate = flags / responses if responses else None
    p95_ms = round(p95 * 1000, 2) if p95 is not None else None
    client_rate = client_errors / requests if requests else None
    stable_rate = stable_client_error_rate(before, after, min_requests)
    reasons = []
    if requests < min_requests:
        return Measurement(at or time.time(), int(requests), error_rate, p95_ms, flag_rate, "inconclusive",
                           [f"{int(requests)} requests < min_requests {min_requests}"], client_rate, stable_rate)
    if error_rate is not None and error_rate > thresholds.max_error_rate:
        reasons.append(f"error rate {error_rate:.3f} > {thresholds.max_error_rate:g} ({int(errors)}/{int(requests)})")
    if p95_ms is not None and p95_ms > thresholds.max_p95_latency_ms:
        reasons.append(f"p95 latency {p95_ms:.0f} ms > {thresholds.max_p95_latency_ms:g} ms")
    if flag_rate is not None and flag_rate > thresholds.max_guard_flag_rate:
        reasons.append(f"guard-flag rate {flag_rate:.3f} > {thresholds.max_guard_flag_rate:g} "
                       f"({int(flags)}/{int(responses)})")
    if client_rate is not None and client_rate - stable_rate > thresholds.max_client_error_rate_increase + 1e-12:
        reasons.append(f"4xx rate {client_rate:.3f} > the stable colour's {stable_rate:.3f} + "
                       f"{thresholds.max_client_error_rate_increase:g} ({int(client_errors)}/{int(requests)})")
    return Measurement(at or time.time(), int(requests), error_rate, p95_ms, flag_rate,
                       "fail" if reasons else "pass", reasons, client_rate, stable_rate)
