#!/usr/bin/env bash
# The test command: install, lint (ruff), then the whole test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/install.sh
# promptfoo (npm) for tests/evals/test_promptfoo.py: 0.121.20 is the newest that runs on Node 20.
if ! command -v promptfoo >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  npm install -g --no-fund --no-audit promptfoo@0.121.20 >/dev/null 2>&1 \
    || echo "note: could not install promptfoo; its test will skip" >&2
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
