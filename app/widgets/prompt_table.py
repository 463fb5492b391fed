"""Sample prompts as a table of fields: the prompt, and its own negative prompt, size, steps, CFG and seed.

On disk each row is one prompt in kohya's syntax (`a cat --n blurry --w 768 --s 28`, trainer.shared.prompts), so
prompt files from sd-scripts carry over; here nobody has to learn that syntax. An empty cell takes the
[sampling] default.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from trainer.shared.prompts import join_prompt, split_prompt

# (kohya flag or "" for the prompt itself, column title, tooltip)
COLUMNS = [("", "Prompt", "what to draw; use the trigger word"),
           ("n", "Negative prompt", "empty: the negative prompt from the settings"),
           ("w", "Width", "pixels; empty: the training resolution"),
           ("h", "Height", "pixels; empty: the training resolution"),
           ("s", "Steps", "sampler steps; empty: the setting"),
           ("l", "CFG", "guidance scale; empty: the setting"),
           ("d", "Seed", "empty: the preview seed + the row number")]


class PromptTable(QWidget):
    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([title for _, title, _ in COLUMNS])
        for column, (_, _, tip) in enumerate(COLUMNS):
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for column in range(2, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemChanged.connect(lambda _item: self.changed.emit())
        add, remove = QPushButton("Add prompt"), QPushButton("Remove selected")
        add.clicked.connect(lambda: self.add_row(""))
        remove.clicked.connect(self._remove_selected)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(remove)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addLayout(buttons)

    def set_prompts(self, prompts: list[str]) -> None:
        self.table.setRowCount(0)
        for text in prompts:
            self.add_row(text)

    def add_row(self, text: str) -> None:
        prompt, options = split_prompt(text)
        row = self.table.rowCount()
        self.table.insertRow(row)
        for column, (flag, _, _) in enumerate(COLUMNS):
            self.table.setItem(row, column, QTableWidgetItem(options.get(flag, "") if flag else prompt))
        self.changed.emit()

    def prompts(self) -> list[str]:
        """One kohya-syntax line per row that has a prompt."""
        out = []
        for row in range(self.table.rowCount()):
            cells = [(self.table.item(row, c).text() if self.table.item(row, c) else "") for c in range(len(COLUMNS))]
            if cells[0].strip():
                out.append(join_prompt(cells[0], {flag: cells[c] for c, (flag, _, _) in enumerate(COLUMNS) if flag}))
        return out

    def _remove_selected(self) -> None:
        for row in sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True):
            self.table.removeRow(row)
        self.changed.emit()
