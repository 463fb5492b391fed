"""What this computer offers for training, as plain facts: the GPU, and the optional pieces that are missing
with what each costs. Shown on the start page the first time, then only from Help › This computer."""

from __future__ import annotations

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import QFrame, QLabel, QPushButton, QVBoxLayout

from app.engine_call import EngineCall

SEEN_KEY = "system_facts_seen"


def facts_html(report: dict) -> str:
    lines = []
    for gpu in report.get("gpus", []):
        lines.append(f"<b>GPU:</b> {gpu['name']}, {gpu['free_gb']} of {gpu['total_gb']} GB free, "
                     f"bf16 {'yes' if gpu['bf16'] else 'no (fp16 is used)'}")
    for fact in report.get("optional", []):
        if not fact["present"]:
            lines.append(f"<b>No {fact['name']}:</b> {fact['cost']}.")
    lines.append(f"<span style='color:#666'>PyTorch {report.get('torch', '?')}"
                 + (f", CUDA {report['cuda_version']}" if report.get("cuda_version") else "") + "</span>")
    return "<br>".join(lines)


class SystemFacts(QFrame):
    """Asks the engine (`lora-studio system --json`) once; emits `ready` with the report."""
    ready = Signal(dict)

    def __init__(self, parent=None, engine: list[str] | None = None, first_run_only: bool = True):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.report: dict | None = None
        self.settings = QSettings("LoRA Studio", "LoRA Studio")
        self.text = QLabel("Looking at this computer…")
        self.text.setWordWrap(True)
        self.dismiss = QPushButton("Got it")
        self.dismiss.clicked.connect(self._dismiss)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>This computer</b>"))
        layout.addWidget(self.text)
        layout.addWidget(self.dismiss)
        if first_run_only and self.settings.value(SEEN_KEY, False, type=bool):
            self.hide()
        self.call = EngineCall(["system", "--json"], self, engine)
        self.call.done.connect(self._answered)

    def _answered(self, report: dict | None, error: str) -> None:
        self.report = report or {}
        self.text.setText(facts_html(report) if report else f"Could not ask the engine: {error}")
        self.ready.emit(self.report)

    def _dismiss(self) -> None:
        self.settings.setValue(SEEN_KEY, True)
        self.hide()
