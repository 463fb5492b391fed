"""View one preview large, or two side by side to compare steps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QVBoxLayout, QWidget

ARROWS = {Qt.Key.Key_Left: (0, -1), Qt.Key.Key_Right: (0, 1), Qt.Key.Key_Up: (-1, 0), Qt.Key.Key_Down: (1, 0)}


class ImageViewer(QDialog):
    """STEP(path, rows, columns) gives the neighbouring image (or None): the arrow keys follow it."""

    def __init__(self, paths: list[str], parent=None, step: Callable[[str, int, int], str | None] | None = None):
        super().__init__(parent)
        self.step, self.paths = step, list(paths[:2])
        row = QHBoxLayout(self)
        self.panels = [self._panel() for _ in self.paths]
        for panel in self.panels:
            row.addWidget(panel[0])
        self._show()

    def _panel(self) -> tuple[QWidget, QLabel, QLabel]:
        panel = QWidget()
        column = QVBoxLayout(panel)
        picture, caption = QLabel(), QLabel()
        caption.setWordWrap(True)
        column.addWidget(picture)
        column.addWidget(caption)
        return panel, picture, caption

    def _show(self) -> None:
        self.setWindowTitle("Compare samples" if len(self.paths) > 1 else Path(self.paths[0]).name)
        for path, (_panel, picture, caption) in zip(self.paths, self.panels):
            pixmap = QPixmap(path)
            side = max(512, pixmap.width())
            picture.setPixmap(pixmap.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                            Qt.TransformationMode.FastTransformation))  # crisp pixels when small
            caption.setText(_caption(path))

    def keyPressEvent(self, event) -> None:
        move = ARROWS.get(event.key())
        if move and self.step and len(self.paths) == 1:
            found = self.step(self.paths[0], *move)
            if found:
                self.paths = [found]
                self._show()
            return
        super().keyPressEvent(event)


def _caption(path: str) -> str:
    from PIL import Image

    with Image.open(path) as im:
        text = im.text
    return f"step {text.get('step', '?')} · seed {text.get('seed', '?')}\n{text.get('prompt', '')}"
