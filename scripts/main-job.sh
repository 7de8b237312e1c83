#!/usr/bin/env bash
# The main job on the embedded default (tiny local model, local registry, local serving):
# install, then data check -> bootstrap -> train -> export + parity -> register -> serve -> eval.
#   bash scripts/main-job.sh [key=value overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/install.sh
exec .venv/bin/llmops pipeline main "$@"
