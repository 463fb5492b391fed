"""An unexpected error in the GUI becomes a plain message, not a traceback on a terminal nobody watches.

PySide prints exceptions raised in slots and carries on; without this hook a user would see nothing, or a
half-updated window. The message says what happened in one line and that nothing is lost (training runs in
its own process, files are written atomically); the traceback goes to a log file and the dialog's details.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from PySide6.QtCore import QStandardPaths
from PySide6.QtWidgets import QApplication, QMessageBox


def log_path() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".lora-studio") / "gui-errors.log"


def report(exc_type, exc, tb) -> QMessageBox | None:
    details = "".join(traceback.format_exception(exc_type, exc, tb))
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n{details}\n")
    except OSError:
        path = None
    print(details, file=sys.stderr)
    if QApplication.instance() is None:
        return None
    box = QMessageBox(QMessageBox.Icon.Critical, "Something went wrong",
                      f"LoRA Studio hit an unexpected problem: {exc_type.__name__}: {exc}\n\n"
                      "Your projects, captions and runs are safe: training runs in its own process and every "
                      "file is written atomically. If this keeps happening, please report it with the "
                      "details" + (f" (also saved in {path})." if path else "."))
    box.setDetailedText(details)
    box.open()
    report.last = box
    return box


def install() -> None:
    sys.excepthook = report
