"""Importing dropped files through the engine (`dataset import --json --progress`), cancellable."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.engine_client import EngineCall


class ImportJob(QObject):
    progress = Signal(int, int)
    finished = Signal(object)   # the report dict, or None when cancelled or failed

    def __init__(self, sources: list[Path], into: Path, parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.engine = engine
        self.args = ["dataset", "import", *map(str, sources), "--into", str(into), "--json", "--progress"]
        self.call: EngineCall | None = None
        self.cancelled = False
        self.error = ""

    def start(self) -> None:
        self.call = EngineCall(self.args, self, self.engine)
        self.call.stderr_line.connect(self._progress)
        self.call.done.connect(self._done)

    def cancel(self) -> None:
        # each file is written atomically, so stopping between or during files leaves no half-written file
        self.cancelled = True
        if self.call is not None:
            self.call.cancel()

    def _progress(self, line: str) -> None:
        try:
            data = json.loads(line)
            self.progress.emit(data["done"], data["total"])
        except (json.JSONDecodeError, KeyError, TypeError):
            self.error += line + "\n"

    def _done(self, report, error: str) -> None:
        self.error = self.error or error
        self.finished.emit(None if self.cancelled else report)
