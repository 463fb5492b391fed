#!/usr/bin/env bash
# Set up .venv (if needed) and run LoRA Studio: the desktop app where there is a display, otherwise the
# headless demo on the built-in tiny model. Extra arguments go to `lora-studio`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -gt 0 ]; then
  exec .venv/bin/lora-studio "$@"
elif [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && .venv/bin/python -c "import app.main_window" 2>/dev/null; then
  exec .venv/bin/lora-studio
else
  exec .venv/bin/lora-studio train --demo
fi
