#!/usr/bin/env bash
# Add LoRA Studio to the desktop's application menu (Linux, freedesktop.org): the .desktop entry and the icon,
# for the current user. It launches the bundle when one was built (packaging/build.sh), else the .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
apps=${XDG_DATA_HOME:-$HOME/.local/share}/applications
icons=${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/256x256/apps
mkdir -p "$apps" "$icons"
if [ -x dist/lora-studio/lora-studio ]; then exe="$root/dist/lora-studio/lora-studio"; else exe="$root/.venv/bin/lora-studio"; fi
cp assets/icon.png "$icons/lora-studio.png"
sed "s|^Exec=lora-studio|Exec=\"$exe\"|" packaging/lora-studio.desktop > "$apps/lora-studio.desktop"
command -v desktop-file-validate >/dev/null && desktop-file-validate "$apps/lora-studio.desktop" || true
command -v update-desktop-database >/dev/null && update-desktop-database "$apps" || true
echo "installed: $apps/lora-studio.desktop -> $exe"
