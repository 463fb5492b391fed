"""LoRA Studio's headless training engine.

Kept import-light on purpose: the GUI imports trainer.shared.config and trainer.shared.events, which must not pull torch.
"""

__version__ = "0.1.0"
