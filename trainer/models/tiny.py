"""The built-in tiny models with random weights, one per family (trainer.families: each builds its own from
assets/configs/tiny-*). They let the demo, the GUI's "try it" path and every test run the real code end to
end on a CPU, in well under a second. They produce noise images.
"""

from __future__ import annotations


def build_tiny_components(name: str, seed: int = 0) -> dict:
    """Random-weight components of the family named by id or config name (sd1 or sd15, sd2, sdxl, ...)."""
    from trainer.families.registry import find

    return find(name).tiny_components(seed)
