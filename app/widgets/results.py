"""The Test page's results: a table of thumbnails with each image's settings written under it.

Plain generations add a row each; an X/Y grid lays its cells out as rows × columns with the axis values as
headers. Images stream in one by one as the engine reports them.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QStyledItemDelegate, QStyleOptionViewItem, QTableView

THUMB = 160
CAPTION_LINES = 3
PATH_ROLE = Qt.ItemDataRole.UserRole + 1


class _CaptionBelow(QStyledItemDelegate):
    def initStyleOption(self, option, index) -> None:
        super().initStyleOption(option, index)
        option.decorationPosition = QStyleOptionViewItem.Position.Top
        option.displayAlignment = Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop
        option.features |= QStyleOptionViewItem.ViewItemFeature.WrapText


class ResultsGrid(QTableView):
    image_activated = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_ = QStandardItemModel(self)
        self.setModel(self.model_)
        self.setItemDelegate(_CaptionBelow(self))
        self.setIconSize(QSize(THUMB, THUMB))
        self.setWordWrap(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        line = self.fontMetrics().lineSpacing()
        self.verticalHeader().setDefaultSectionSize(THUMB + CAPTION_LINES * line + 12)
        self.horizontalHeader().setDefaultSectionSize(THUMB + 24)
        self.clicked.connect(self._clicked)

    def clear(self) -> None:
        self.model_.clear()

    def add_row(self, label: str, columns: int = 1) -> int:
        row = self.model_.rowCount()
        self.model_.setRowCount(row + 1)
        self.model_.setColumnCount(max(self.model_.columnCount(), columns))
        self.model_.setVerticalHeaderItem(row, QStandardItem(label))
        self.scrollToBottom()
        return row

    def set_axes(self, rows: list[str], columns: list[str]) -> None:
        """Start an X/Y grid: rows × columns of empty cells, headed by the axis values."""
        self.clear()
        self.model_.setRowCount(len(rows))
        self.model_.setColumnCount(len(columns))
        self.model_.setVerticalHeaderLabels(rows)
        self.model_.setHorizontalHeaderLabels(columns)

    def put(self, row: int, column: int, path: str, caption: str) -> None:
        if column >= self.model_.columnCount():
            self.model_.setColumnCount(column + 1)
        pixmap = QPixmap(path).scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                      Qt.TransformationMode.SmoothTransformation)
        item = QStandardItem(QIcon(pixmap), caption)
        item.setData(path, PATH_ROLE)
        item.setToolTip(f"{caption}\n{path}")
        self.model_.setItem(row, column, item)

    def image_count(self) -> int:
        return len(self.paths())

    def paths(self) -> list[str]:
        model = self.model_
        return [model.item(r, c).data(PATH_ROLE) for r in range(model.rowCount())
                for c in range(model.columnCount()) if model.item(r, c) is not None]

    def caption(self, row: int, column: int) -> str:
        item = self.model_.item(row, column)
        return item.text() if item is not None else ""

    def selected_paths(self) -> list[str]:
        return [i.data(PATH_ROLE) for i in self.selectedIndexes() if i.data(PATH_ROLE)]

    def _clicked(self, index) -> None:
        path = index.data(PATH_ROLE)
        if path and len(self.selectedIndexes()) == 1:
            self.image_activated.emit(path)
