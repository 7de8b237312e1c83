"""The gateway's Prometheus metrics (GET /metrics, per colour) and the guard flags of its answers.

    llmops_gateway_requests_total{colour,status}          upstream attempts ('error': no HTTP answer);
                                                          status 4xx: the colour's client errors
    llmops_gateway_upstream_errors_total{colour,kind}     failed attempts by kind (connect, http_500, ...)
    llmops_gateway_upstream_latency_seconds{colour}       histogram, to the last body byte
    llmops_gateway_tokens_total{colour}                   completion tokens from `usage`, else one per
                                                          streamed content chunk
    llmops_gateway_responses_total{colour}                successful completions scanned by the guard
    llmops_gateway_guard_flags_total{colour,kind}         flagged completions (pii, html, worker),
                                                          streamed ones included
    llmops_gateway_retries_total{from_colour,to_colour}
    llmops_gateway_client_errors_total                    what clients saw fail
    llmops_gateway_rejected_total{code}                   429s of the gateway's own per-client limits
    llmops_gateway_weight_percent{colour}, llmops_gateway_worker_up{colour}

A failed attempt counts as an error of its colour even when the retry on the other colour
succeeds, so the rollout analysis sees what the client did not.

Only attempts that reached a worker have a colour: the gateway's own answers at its front door
(401 without a key, 413 over the body cap, 429 over the rate limit) are in none of these.

Guard flags. The worker's guards (serving/guards.py) mark what they blocked or rewrote: the
response header `x-llmops-guard-flag`, or for a streamed answer an SSE comment before
`data: [DONE]`; the gateway counts either as kind "worker". It also flags a successful completion
whose output text still holds PII (governance.pii.find_pii) or HTML/script (the evals `no-html`
check), as from a worker without guards. The scan runs after the response is sent, so it adds no
latency.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from evals.assertions import AssertionSpec, run_assertion
from governance.pii import find_pii
from serving.gateway.state import COLOURS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5,
                   2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("llmops_gateway_requests", "Upstream attempts by colour and status "
                                "('error': no HTTP answer)", ["colour", "status"], registry=r)
        self.errors = Counter("llmops_gateway_upstream_errors", "Failed upstream attempts by colour and kind",
                              ["colour", "kind"], registry=r)
        self.latency = Histogram("llmops_gateway_upstream_latency_seconds", "Upstream attempt latency to the "
                                 "last body byte", ["colour"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("llmops_gateway_tokens", "Completion tokens by colour", ["colour"], registry=r)
        self.responses = Counter("llmops_gateway_responses", "Successful completions scanned by the guard",
                                 ["colour"], registry=r)
        self.guard_flags = Counter("llmops_gateway_guard_flags", "Completions flagged (pii, html, worker)",
                                   ["colour", "kind"], registry=r)
        self.retries = Counter("llmops_gateway_retries", "Requests retried on the other colour",
                               ["from_colour", "to_colour"], registry=r)
        self.client_errors = Counter("llmops_gateway_client_errors", "Requests that failed for the client",
                                     registry=r)
        self.rejected = Counter("llmops_gateway_rejected", "Requests the gateway's own limits answered with a 429, "
                                "by code (rate, token rate, concurrency)", ["code"], registry=r)
        self.weight = Gauge("llmops_gateway_weight_percent", "Traffic weight by colour", ["colour"], registry=r)
        self.up = Gauge("llmops_gateway_worker_up", "1 when the colour's worker answers /readyz", ["colour"],
                        registry=r)
        for c in COLOURS:  # export zeros from the start, so rate() and deltas have a first sample
            self.requests.labels(c, "200")
            self.latency.labels(c)
            self.tokens.labels(c)
            self.responses.labels(c)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def guard_kinds(text: str) -> list[str]:
    """Why an output would be flagged: 'pii' and/or 'html' (see the module docstring)."""
    kinds = []
    if find_pii(text):
        kinds.append("pii")
    if "<" in text and not run_assertion(AssertionSpec(type="no-html"), text).passed:
        kinds.append("html")
    return kinds


def completion_text(body: dict[str, Any]) -> tuple[str, int | None]:
    """(output text, completion tokens from `usage` or None) of a completion or a streamed chunk."""
    parts = []
    for choice in body.get("choices") or []:
        if isinstance(choice, dict):
            msg = choice.get("message") or choice.get("delta") or {}
            parts.append(str(msg.get("content") or "") if isinstance(msg, dict) else "")
            parts.append(str(choice.get("text") or ""))
    usage = body.get("usage") or {}
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return "".join(parts), tokens if isinstance(tokens, int) else None
