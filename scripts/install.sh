#!/usr/bin/env bash
# Idempotent install into .venv: torch 2.13.0 (CPU) first and alone, then the project with the
# constraints file. Re-running is a no-op while pyproject.toml and constraints.txt are unchanged.
#   bash scripts/install.sh            # the project + test tools
#   LLMOPS_EXTRAS=test,gpu bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 2; }

extras=${LLMOPS_EXTRAS:-test}
stamp=.venv/.llmops-install-$(cat pyproject.toml constraints.txt <(echo "$extras") | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and alone: any other resolution of `torch` pulls the CUDA build (gigabytes).
.venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null \
  || .venv/bin/pip install --quiet torch==2.13.0
.venv/bin/pip install --quiet -c constraints.txt -e ".[$extras]"
rm -f .venv/.llmops-install-*
touch "$stamp"
echo "installed into .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
