#!/bin/bash
# LoRA Studio on macOS: double-click in Finder (or run in Terminal). Creates .venv, installs PyTorch's default
# macOS build, then starts the app. Safe to run again. (Not run in our CI.)
# Note: Apple GPUs (MPS) are not used by the engine yet; training runs on the CPU, fine for the demo.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=$(command -v python3.12 || command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install "torch>=2.4"
.venv/bin/python -m pip install -q -e .
exec .venv/bin/lora-studio "$@"
