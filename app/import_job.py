"""Importing dropped files through the engine (`dataset import --json --progress`), cancellable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, Signal


class ImportJob(QObject):
    progress = Signal(int, int)
    finished = Signal(object)   # the report dict, or None when cancelled or failed

    def __init__(self, sources: list[Path], into: Path, parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.engine = engine or [sys.executable, "-m", "trainer"]
        self.proc = QProcess(self)
        self.proc.readyReadStandardError.connect(self._progress)
        self.proc.finished.connect(self._finished)
        self.args = ["dataset", "import", *map(str, sources), "--into", str(into), "--json", "--progress"]
        self.cancelled = False
        self.error = ""

    def start(self) -> None:
        self.proc.start(self.engine[0], self.engine[1:] + self.args)

    def cancel(self) -> None:
        # each file is written atomically, so stopping between or during files leaves no half-written file
        self.cancelled = True
        self.proc.kill()

    def _progress(self) -> None:
        for line in bytes(self.proc.readAllStandardError()).decode("utf-8", "replace").splitlines():
            try:
                data = json.loads(line)
                self.progress.emit(data["done"], data["total"])
            except (json.JSONDecodeError, KeyError, TypeError):
                self.error += line + "\n"

    def _finished(self, code: int, _status) -> None:
        out = bytes(self.proc.readAllStandardOutput()).decode("utf-8", "replace")
        try:
            report = json.loads(out) if out.strip() and not self.cancelled else None
        except json.JSONDecodeError:
            report = None
        self.finished.emit(report)
