"""The caption's tags as chips: click a chip's × to remove that tag; type in the box to add one
(completing from the dataset's own tags). The caption text stays the single source of truth."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCompleter,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)


class TagChips(QWidget):
    tags_edited = Signal(list)   # the new tag list, after a chip was removed or a tag added

    def __init__(self, parent=None):
        super().__init__(parent)
        self.chips = QListWidget()
        self.chips.setFlow(QListView.Flow.LeftToRight)
        self.chips.setWrapping(True)
        self.chips.setResizeMode(QListView.ResizeMode.Adjust)
        self.chips.setSpacing(3)
        self.chips.setMaximumHeight(90)
        self.chips.setStyleSheet("QListWidget::item { border: 1px solid palette(mid); border-radius: 8px; "
                                 "padding: 1px 6px; }")
        self.chips.itemClicked.connect(self._remove)
        self.adder = QLineEdit(placeholderText="add a tag…")
        self.completer = QCompleter([], self)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.adder.setCompleter(self.completer)
        self.adder.returnPressed.connect(self._add)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.chips)
        layout.addWidget(self.adder)
        self.tags: list[str] = []

    def set_tags(self, tags: list[str]) -> None:
        self.tags = list(tags)
        self.chips.clear()
        for tag in self.tags:
            item = QListWidgetItem(f"{tag}  ×")
            item.setData(Qt.ItemDataRole.UserRole, tag)
            item.setToolTip(f"click to remove '{tag}'")
            self.chips.addItem(item)

    def _remove(self, item: QListWidgetItem) -> None:
        tag = item.data(Qt.ItemDataRole.UserRole)
        self.tags_edited.emit([t for t in self.tags if t != tag])

    def _add(self) -> None:
        tag = self.adder.text().strip().strip(",")
        self.adder.clear()
        if tag and tag.lower() not in (t.lower() for t in self.tags):
            self.tags_edited.emit(self.tags + [tag])
