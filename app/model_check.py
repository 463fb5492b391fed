"""Is this file a base model we can train on? One check for the wizard and the training page: the engine's
`inspect --json --require-base`, which also carries the model family's facts (label, native resolution, token
limit, presets: the GUI keeps no family tables of its own), and the file remembered as recent."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app import settings
from app.engine_client import EngineCall


def describe(info: dict, path: str = "") -> str:
    """'SDXL · epsilon · safetensors' (with the file name when given); the label is the engine's."""
    family = info.get("family") or {}
    label = " ".join(p for p in (family.get("label", info.get("arch", "")), info.get("variant", "")) if p)
    prediction = info.get("prediction_type", "")
    parts = [label, "" if prediction == "flow" else prediction]  # flow: every checkpoint of such a family
    parts.append(Path(path).name if path else info.get("format", ""))
    return " · ".join(p for p in parts if p)


class ModelCheck(QObject):
    """`checked(path, info or None, error)` for the latest path asked about; stale answers are dropped."""
    checked = Signal(str, object, str)

    def __init__(self, parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.engine = engine
        self.path = ""
        self.call: EngineCall | None = None

    def check(self, path: str) -> None:
        self.path = path = path.strip()
        self.call = EngineCall(["inspect", path, "--json", "--require-base"], self, self.engine)
        self.call.done.connect(lambda info, error: self._answered(path, info, error))

    def _answered(self, path: str, info: dict | None, error: str) -> None:
        if path != self.path:
            return  # the user picked another file meanwhile
        if info is not None and info.get("format") != "demo":
            settings.remember(settings.RECENT_MODELS, path)
        self.checked.emit(path, info, error)
