"""Edit many captions at once (the engine's `dataset caption DIR --json` with --trigger/--add/--remove/
--replace-tag/--find), on the selection or the whole dataset, and set images aside."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QStyle,
    QWidget,
)

from app.engine_client import EngineCall

BULK_OPS = [("Set trigger word", "--trigger"), ("Add tag", "--add"), ("Remove tag", "--remove"),
            ("Replace tag", "--replace-tag"), ("Find & replace", "--find")]


class BulkEditBar(QWidget):
    about_to_edit = Signal()       # save the caption being typed first: the engine edits the files
    finished = Signal()            # captions changed on disk
    exclude_requested = Signal()

    def __init__(self, selection: Callable[[], list[Path]], parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.selection, self.engine = selection, engine
        self.folder: Path | None = None
        self.call: EngineCall | None = None
        self.op = QComboBox()
        for label, flag in BULK_OPS:
            self.op.addItem(label, flag)
        self.value = QLineEdit(placeholderText="tag or text")
        self.completer = QCompleter([], self)  # the dataset's own tags, most frequent first
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.value.setCompleter(self.completer)
        self.other = QLineEdit(placeholderText="replace with")
        self.other.setVisible(False)
        self.op.currentIndexChanged.connect(
            lambda _i: self.other.setVisible(self.op.currentData() in ("--replace-tag", "--find")))
        self.scope = QComboBox()
        self.scope.addItems(["selected images", "whole dataset"])
        apply = QPushButton("Apply")
        apply.clicked.connect(self.apply)
        exclude = QPushButton(self.style().standardIcon(QStyle.StandardPixmap.SP_DialogNoButton), "Exclude selected")
        exclude.setToolTip("Move the selected images (and captions) into a hidden .excluded folder beside them: "
                           "training skips them, nothing is deleted")
        exclude.clicked.connect(self.exclude_requested)
        self.state = QLabel("")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.op, self.value, self.other, self.scope, apply, exclude, self.state):
            layout.addWidget(widget, 1 if isinstance(widget, QLineEdit) else 0)

    def set_known_tags(self, tags: list[str]) -> None:
        self.completer.model().setStringList(tags)

    def apply(self) -> None:
        if self.folder is None or not self.value.text().strip():
            return
        self.about_to_edit.emit()
        args = self._args()
        if self.scope.currentIndex() == 0:
            selected = self.selection()
            if not selected:
                self.state.setText("select images first")
                return
            args += ["--only", *map(str, selected)]
        self.call = EngineCall(args, self, self.engine)
        self.call.done.connect(self._done)

    def _args(self) -> list[str]:
        flag, value = self.op.currentData(), self.value.text().strip()
        args = ["dataset", "caption", str(self.folder), "--json"]
        args += [flag, value, self.other.text().strip()] if flag == "--replace-tag" else [flag, value]
        if flag == "--find":
            args += ["--replace-with", self.other.text()]
        return args

    def _done(self, result: dict | None, error: str) -> None:
        if result is None:
            self.state.setText(error)
        else:
            skipped = f", {len(result['skipped'])} skipped (not UTF-8)" if result["skipped"] else ""
            self.state.setText(f"{len(result['changed'])} captions changed{skipped}")
        self.finished.emit()
