"""What the wizard's pages have decided so far, shared by all of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from app.project import Project
from app.wizard.plan import Plan, SystemInfo

DEMO_MODEL = "demo:sd15"


@dataclass
class WizardState:
    projects_dir: Path
    kind: str = "character"
    name: str = "my-lora"
    project: Project | None = None
    model_path: str = ""
    family: dict | None = None      # the model family's facts from the engine's `inspect` (the demo's too)
    model_text: str = ""            # what the model page shows about it
    system: SystemInfo | None = None
    images: int = 0
    health: dict | None = None
    trigger: str = ""
    class_word: str = ""
    prune: list[str] = field(default_factory=list)
    captions_applied: tuple = ()    # the (trigger, class word, prune) last written, to write once
    plan: Plan | None = None
    prompts: list[str] = field(default_factory=list)

    @property
    def arch(self) -> str:
        """The family id (sd1, sdxl, ...), '' until the engine has answered."""
        return self.family["id"] if self.family else ""

    @property
    def is_demo(self) -> bool:
        return self.model_path.startswith("demo:")
