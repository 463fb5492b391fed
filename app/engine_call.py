"""One short headless engine command (`inspect`, `system`, `dataset check`, ...) run as a child process.

The GUI never imports torch; it asks the engine and reads its JSON answer. The answer arrives on the GUI
thread through the `done` signal, so handlers may touch widgets.
"""

from __future__ import annotations

import json
import sys

from PySide6.QtCore import QObject, QProcess, Signal


class EngineCall(QObject):
    done = Signal(object, str)   # the parsed JSON answer (None on failure), the error text

    def __init__(self, args: list[str], parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        engine = engine or [sys.executable, "-m", "trainer"]
        self.proc = QProcess(self)
        self.proc.finished.connect(self._finished)
        self.proc.errorOccurred.connect(self._failed_to_start)
        self.proc.start(engine[0], engine[1:] + args)

    def _finished(self, code: int, _status) -> None:
        out = bytes(self.proc.readAllStandardOutput()).decode("utf-8", "replace")
        err = bytes(self.proc.readAllStandardError()).decode("utf-8", "replace").strip()
        if code != 0:
            self.done.emit(None, _last_error_line(err) or f"the engine exited with code {code}")
            return
        try:
            self.done.emit(json.loads(out), "")
        except json.JSONDecodeError:
            self.done.emit(None, f"the engine's answer was not JSON: {out[:200]!r}")

    def _failed_to_start(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.done.emit(None, f"could not start the engine ({self.proc.program()})")


def _last_error_line(stderr: str) -> str:
    """The engine prints `error: ...` (and maybe a hint) last; earlier lines are logs."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("error:"):
            return "\n".join(lines[i:]).removeprefix("error: ")
    return lines[-1] if lines else ""
