"""Where each Stable Diffusion UI looks for LoRA files, and the sidecars A1111/Forge read.

Given a folder, tell an AUTOMATIC1111/Forge install, a ComfyUI install (also the portable build's outer
folder), an InvokeAI root, or a plain folder, and return the folder the file belongs in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class UiFolder:
    ui: str          # a1111 | forge | comfyui | invokeai | folder
    lora_dir: Path
    note: str = ""   # what the user still has to do, if anything


def detect_ui(folder: Path) -> UiFolder:
    folder = Path(folder).expanduser()
    if (folder / "ComfyUI" / "comfy").is_dir():          # the portable build wraps the install
        folder = folder / "ComfyUI"
    if any((folder / marker).exists() for marker in ("webui.py", "webui-user.sh", "webui-user.bat")):
        ui = "forge" if (folder / "modules_forge").is_dir() else "a1111"
        return UiFolder(ui, folder / "models" / "Lora", "refresh the Lora tab (or restart) to see it")
    if (folder / "comfy").is_dir() and (folder / "main.py").exists():
        return UiFolder("comfyui", folder / "models" / "loras", "pick it in a LoraLoader node (press R)")
    if (folder / "invokeai.yaml").exists():
        # InvokeAI registers models through its Model Manager rather than by watching a folder
        target = folder / "lora-studio"
        return UiFolder("invokeai", target, f"in InvokeAI: Model Manager > Add Model > Scan Folder > {target}")
    return UiFolder("folder", folder)


def a1111_sidecar(sd_version: str, trigger: str, title: str, notes: str, weight: float = 1.0) -> str:
    """`<name>.json` as A1111's Lora card editor writes it: activation text, preferred weight, version (the
    family's `a1111_version`: SD1, SD2, SDXL)."""
    return json.dumps({"description": title, "sd version": sd_version,
                       "activation text": trigger, "preferred weight": weight, "negative text": "",
                       "notes": notes}, indent=4, ensure_ascii=False)
