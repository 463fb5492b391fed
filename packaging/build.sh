#!/usr/bin/env bash
# Build the one-folder desktop bundle: dist/lora-studio/lora-studio (GUI with no arguments, the engine and
# CLI with them). Needs the project's .venv (scripts/setup.sh) and adds PyInstaller to it.
# Usage: bash packaging/build.sh [--smoke]   (--smoke also runs packaging/smoke_test.py on the result)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh bundle
start=$(date +%s)
.venv/bin/pyinstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller \
  packaging/lora-studio.spec
echo "bundle: dist/lora-studio ($(du -sh dist/lora-studio | cut -f1)) built in $(( $(date +%s) - start )) s"
if [ "${1:-}" = "--smoke" ]; then
  .venv/bin/python packaging/smoke_test.py dist/lora-studio/lora-studio
fi
