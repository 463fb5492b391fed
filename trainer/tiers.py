"""Which memory-tier preset (presets/vram-*.toml, sdxl-vram-*.toml, cpu.toml) fits a GPU's free memory.

One rule for the wizard (the GUI imports this: it stays free of torch) and for `lora-studio system`.
Free memory, not total: the desktop and other programs keep some. The table is docs/presets/memory-tiers.md.
"""

from __future__ import annotations

TIER_THRESHOLDS_GB = ((22, "24gb"), (15, "16gb"), (11, "12gb"), (7.5, "8gb"))


def memory_tier(family: str, free_gb: float | None) -> str:
    """The tier preset for a preset family ("sd15" or "sdxl") on a GPU with FREE_GB free; None: no GPU."""
    if free_gb is None:
        return "cpu"
    size = next((name for limit, name in TIER_THRESHOLDS_GB if free_gb >= limit), "6gb")
    if family == "sdxl":
        return f"sdxl-vram-{'8gb' if size == '6gb' else size}"  # no SDXL tier below 8 GB: the closest one
    return f"vram-{size}"
