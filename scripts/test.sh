#!/usr/bin/env bash
# The test command: install, lint (ruff), then the whole test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/install.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
