#!/usr/bin/env bash
# Create .venv and install LoRA Studio into it. Safe to run again: it only installs what is missing.
# Where no NVIDIA GPU is found, torch is pinned to the CPU build first, so that no dependency pulls the
# multi-GB CUDA build; with a GPU, pip picks the CUDA build that matches the range in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$VPY" -m pip install -q "torch>=2.4"
  else
    echo "setup: no NVIDIA GPU found; installing the CPU build of torch" >&2
    # PyTorch's CPU index where it can be reached; otherwise a CPU wheel the local pip is configured with.
    if getent hosts download.pytorch.org >/dev/null 2>&1; then
      "$VPY" -m pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
        --extra-index-url https://pypi.org/simple
    else
      "$VPY" -m pip install -q "torch==2.13.0"
    fi
  fi
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)$EXTRAS
if [ ! -f "$stamp" ]; then
  "$VPY" -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$stamp"
fi
