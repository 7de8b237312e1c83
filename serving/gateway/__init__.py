"""The blue/green gateway: one process that routes `/v1/*` to a blue or a green worker by weight.

    llmops gateway run --port 8000            # or: llmops serve (without --model)
    llmops gateway status
    curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \
        -d '{"messages": [{"role": "user", "content": "What is a lambda?"}]}'

Each colour is a worker process, the plain single-model server (serving/app.py), in its own
session, so a bad version cannot take the good one down and a gateway crash does not take either.
The gateway proxies with one aiohttp.ClientSession (SSE passed through chunk by chunk), retries a
failed request once on the other colour, keeps per-colour metrics, and takes weight changes,
loads, promotions and rollbacks through an authenticated, audited admin API.

The modules, in the order a request meets them:

    app.py          the ASGI app: /v1/* to the proxy, admin routes, /healthz, /metrics; run_gateway
    proxy.py        pick a colour by weight, proxy, retry on the other colour, relay SSE
    core.py         the Gateway: state, workers, health loop, admin operations (load, weights, stop)
    workers.py      one worker process: its command, start and stop
    state.py        what survives a restart: <home>/gateway/state.json
    metrics.py      the Prometheus metrics per colour and the guard flags of the answers
    admin.py        admin request bodies, AdminError, API key / local token auth, audit
    client.py       GatewayClient, the admin API from the CLI and the rollout controller
    faults.py       fault injection (tests and game days), run by fault_worker.py
    testing.py      running_gateway, TrafficLoop, bench_gateway: the tests' and benches' harness

Starting a process and waiting for it is llmops/launch.py; the release controller that drives the
gateway is llmops/jobs/release.py.
"""

from serving.gateway.admin import AdminError
from serving.gateway.app import create_gateway, run_gateway
from serving.gateway.client import GatewayClient, admin_headers
from serving.gateway.core import Gateway, GatewayOptions
from serving.gateway.faults import FaultSpec, parse_fault
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.state import (
    COLOURS,
    ColourState,
    GatewayState,
    gateway_dir,
    load_state,
    other,
    save_state,
    state_path,
)

__all__ = ["COLOURS", "AdminError", "ColourState", "FaultSpec", "Gateway", "GatewayClient", "GatewayMetrics",
           "GatewayOptions", "GatewayState", "admin_headers", "create_gateway", "gateway_dir", "load_state",
           "other", "parse_fault", "run_gateway", "save_state", "state_path"]
