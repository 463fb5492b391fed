"""What this computer offers for training, as plain facts: the GPU, and the optional pieces that are missing
with what each costs. Shown on the start page the first time, then only from Help › This computer."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QLabel, QPushButton, QVBoxLayout

from app import settings
from app.system_probe import SystemProbe
from app.theme import muted_html_color

SEEN_KEY = settings.SYSTEM_FACTS_SEEN


def facts_html(report: dict) -> str:
    lines = []
    for gpu in report.get("gpus", []):
        lines.append(f"<b>GPU:</b> {gpu['name']}, {gpu['free_gb']} of {gpu['total_gb']} GB free, "
                     f"bf16 {'yes' if gpu['bf16'] else 'no (fp16 is used)'}")
    for fact in report.get("optional", []):
        if not fact["present"]:
            lines.append(f"<b>No {fact['name']}:</b> {fact['cost']}.")
    lines.append(f"<span style='color:{muted_html_color()}'>PyTorch {report.get('torch', '?')}"
                 + (f", CUDA {report['cuda_version']}" if report.get("cuda_version") else "") + "</span>")
    return "<br>".join(lines)


class SystemFacts(QFrame):
    """Shows the app's system probe (app.system_probe) once it has answered; emits `ready` with the report."""
    ready = Signal(dict)

    def __init__(self, probe: SystemProbe, parent=None, first_run_only: bool = True):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.report: dict | None = None
        self.text = QLabel("Looking at this computer…")
        self.text.setWordWrap(True)
        self.dismiss = QPushButton("Got it")
        self.dismiss.clicked.connect(self._dismiss)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>This computer</b>"))
        layout.addWidget(self.text)
        layout.addWidget(self.dismiss)
        if first_run_only and settings.flag(SEEN_KEY):
            self.hide()
        probe.ready.connect(self._answered)
        if probe.report is not None:
            self._answered(probe.report, probe.error)

    def _answered(self, report: dict, error: str) -> None:
        self.report = report
        self.text.setText(facts_html(report) if report else f"Could not ask the engine: {error}")
        self.ready.emit(report)

    def _dismiss(self) -> None:
        settings.put(SEEN_KEY, True)
        self.hide()
