"""The live preview gallery: one row per sample prompt, one column per sampled step (step 0 first).

A model/view table (QStandardItemModel): a long run adds columns, not widgets. Click an image to view it
large; select two and press Compare to see them side by side.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QTableView

from trainer.shared.run_folder import samples_in

THUMB = 128
PATH_ROLE = Qt.ItemDataRole.UserRole + 1
STEP_ROLE = Qt.ItemDataRole.UserRole + 2


class SampleGallery(QTableView):
    image_activated = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_ = QStandardItemModel(self)
        self.setModel(self.model_)
        self.steps: list[int] = []
        self.prompts: list[str] = []
        self.setIconSize(QSize(THUMB, THUMB))
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setDefaultSectionSize(THUMB + 8)
        self.horizontalHeader().setDefaultSectionSize(THUMB + 8)
        self.clicked.connect(self._clicked)

    def clear(self) -> None:
        self.model_.clear()
        self.steps, self.prompts = [], []

    def add_sample(self, path: str, prompt: str, step: int, index: int) -> None:
        row = self._row_for(prompt, index)
        col = self._column_for(step)
        pixmap = QPixmap(path)
        item = QStandardItem(QIcon(pixmap.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                                 Qt.TransformationMode.SmoothTransformation)), "")
        item.setData(path, PATH_ROLE)
        item.setData(step, STEP_ROLE)
        item.setToolTip(f"step {step}\n{prompt}\n{path}")
        self.model_.setItem(row, col, item)

    def image_count(self) -> int:
        return sum(1 for r in range(self.model_.rowCount()) for c in range(self.model_.columnCount())
                   if self.model_.item(r, c) is not None and self.model_.item(r, c).data(PATH_ROLE))

    def selected_paths(self) -> list[str]:
        return [i.data(PATH_ROLE) for i in self.selectedIndexes() if i.data(PATH_ROLE)]

    def selected_steps(self) -> list[int]:
        """The training step of each selected preview (as the `sample` event said)."""
        return [i.data(STEP_ROLE) for i in self.selectedIndexes() if i.data(PATH_ROLE)]

    def load_run(self, run_dir: Path) -> None:
        """Show the samples of a finished run (the run folder's layout: trainer.shared.run_folder)."""
        from PIL import Image

        for png, step, index in samples_in(run_dir):
            with Image.open(png) as im:
                prompt = im.text.get("prompt", f"prompt {index + 1}")
            self.add_sample(str(png), prompt, step, index)

    def _row_for(self, prompt: str, index: int) -> int:
        while len(self.prompts) <= index:
            self.prompts.append("")
            self.model_.setRowCount(len(self.prompts))
        self.prompts[index] = prompt
        self.model_.setVerticalHeaderItem(index, QStandardItem(_short(prompt)))
        return index

    def _column_for(self, step: int) -> int:
        if step in self.steps:
            return self.steps.index(step)
        self.steps.append(step)
        col = len(self.steps) - 1
        self.model_.setColumnCount(len(self.steps))
        self.model_.setHorizontalHeaderItem(col, QStandardItem("baseline" if step == 0 else f"step {step}"))
        self.scrollTo(self.model_.index(0, col))
        return col

    def neighbour(self, path: str, rows: int, columns: int) -> str | None:
        """The preview ROWS prompts down and COLUMNS steps right of PATH (None past the edge); it becomes
        the current cell, so the gallery follows the viewer."""
        here = next((i for i in self._indexes() if i.data(PATH_ROLE) == path), None)
        if here is None:
            return None
        there = self.model_.index(here.row() + rows, here.column() + columns)
        if not there.isValid() or not there.data(PATH_ROLE):
            return None
        self.setCurrentIndex(there)
        return there.data(PATH_ROLE)

    def _indexes(self):
        return (self.model_.index(r, c) for r in range(self.model_.rowCount())
                for c in range(self.model_.columnCount()))

    def keyPressEvent(self, event) -> None:
        """Arrows move through the previews (Qt's own); Return or Space opens the current one large."""
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space):
            path = self.currentIndex().data(PATH_ROLE)
            if path:
                self.image_activated.emit(path)
                return
        super().keyPressEvent(event)

    def _clicked(self, index) -> None:
        path = index.data(PATH_ROLE)
        if path and len(self.selectedIndexes()) == 1:
            self.image_activated.emit(path)


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
