"""Which memory-tier preset (presets/vram-*.toml, sdxl-vram-*.toml, cpu.toml) fits a GPU's free memory.

One rule for the wizard (the GUI imports this: it stays free of torch) and for `lora-studio system`. Which
tiers a model family has is its own fact (`tier_prefix`, `smallest_tier`: trainer.families, shown to the GUI
by `inspect --json`). Free memory, not total: the desktop and other programs keep some. The table is
docs/presets/memory-tiers.md.
"""

from __future__ import annotations

TIER_THRESHOLDS_GB = ((22, "24gb"), (15, "16gb"), (11, "12gb"), (7.5, "8gb"))
SIZES = ("6gb", "8gb", "12gb", "16gb", "24gb")


def memory_tier(tier_prefix: str, free_gb: float | None, smallest: str = "6gb") -> str:
    """The tier preset `<tier_prefix>vram-<size>` for a GPU with FREE_GB free (None: no GPU, the CPU preset).
    A family with no tier below SMALLEST gets that one: the closest it has."""
    if free_gb is None:
        return "cpu"
    size = next((name for limit, name in TIER_THRESHOLDS_GB if free_gb >= limit), "6gb")
    if SIZES.index(size) < SIZES.index(smallest):
        size = smallest
    return f"{tier_prefix}vram-{size}"
