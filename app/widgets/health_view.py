"""The dataset's health report, from the engine (`dataset check DIR --json`): counts, buckets and each
warning with the files it names; clicking a file selects it in the grid."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QListWidget, QListWidgetItem

from app.engine_client import EngineCall


class HealthView(QListWidget):
    checked = Signal(object)       # the report dict (not emitted when the check failed)
    file_chosen = Signal(Path)

    def __init__(self, parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.engine = engine
        self.call: EngineCall | None = None
        self.itemClicked.connect(self._clicked)

    def run(self, folder: Path) -> None:
        self.call = EngineCall(["dataset", "check", str(folder), "--json"], self, self.engine)
        # a bound method, not a lambda: Qt drops the connection if the view is deleted before the check ends
        self.call.done.connect(self._done)
        self.clear()
        self.addItem("checking…")

    def _done(self, report: dict | None, error: str) -> None:
        self.clear()
        if report is None:
            self.addItem(error)
            return
        buckets = ", ".join(f"{k}: {v}" for k, v in report["bucket_plan"]["buckets"].items())
        self.addItem(f"{report['images']} images · {report['steps_per_epoch']} steps per epoch · "
                     f"buckets {buckets}")
        for warning in report["warnings"]:
            self.addItem(f"⚠ {warning['message']}")
            for file in warning["files"]:
                item = QListWidgetItem(f"    {Path(file).name}")
                item.setData(Qt.ItemDataRole.UserRole, file)
                self.addItem(item)
        self.checked.emit(report)

    def _clicked(self, item: QListWidgetItem) -> None:
        file = item.data(Qt.ItemDataRole.UserRole)
        if file:
            self.file_chosen.emit(Path(file))
