"""A worker with injected faults: the app of `llmops serve` (serving.app.create_app) wrapped in
FaultMiddleware and run by uvicorn, in one process.

    LLMOPS_FAULT=error:0.5 python -m serving.gateway.fault_worker --model DIR --port P --model-id ID

The gateway starts it (serving.gateway.workers.worker_command) for a load request that carries a
fault, only when faults are allowed (serving/gateway/faults.py). Exit code 2 on bad input (no or
a bad LLMOPS_FAULT, a model that cannot be loaded), as `llmops serve`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

from llmops.errors import InputError
from llmops.settings import Settings, apply_offline_env
from serving.app import ServeLimits, create_app
from serving.gateway.faults import FAULT_ENV, FaultMiddleware, FaultSpec, parse_fault


def serve_with_fault(model_dir: str | Path, spec: FaultSpec, *, host: str = "127.0.0.1", port: int = 8000,
                     backend: str = "onnx", model_id: str | None = None, threads: int | None = None) -> None:
    """Load the model, wrap its app in FaultMiddleware and serve it until SIGINT/SIGTERM."""
    app = create_app(model_dir, backend=backend, model_id=model_id, threads=threads,
                     limits=ServeLimits(rate_limit=None))  # behind the gateway: it limits; keys or its token
    uvicorn.run(FaultMiddleware(app, spec), host=host, port=port, log_level="warning", access_log=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.gateway.fault_worker",
                                     description="One worker with the fault in LLMOPS_FAULT (tests only).")
    parser.add_argument("--model", required=True, help="The servable folder.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend", choices=("onnx", "torch"), default="onnx")
    parser.add_argument("--model-id", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    apply_offline_env()
    try:
        text = Settings.load().fault
        if not text:
            raise InputError(f"the fault worker needs {FAULT_ENV}")
        serve_with_fault(args.model, parse_fault(text), host=args.host, port=args.port, backend=args.backend,
                         model_id=args.model_id, threads=args.threads)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
