"""View one preview large, or two side by side to compare steps."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QVBoxLayout, QWidget


class ImageViewer(QDialog):
    def __init__(self, paths: list[str], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Compare samples" if len(paths) > 1 else Path(paths[0]).name)
        row = QHBoxLayout(self)
        for path in paths[:2]:
            row.addWidget(self._panel(path))

    def _panel(self, path: str) -> QWidget:
        panel = QWidget()
        column = QVBoxLayout(panel)
        picture = QLabel()
        pixmap = QPixmap(path)
        side = max(512, pixmap.width())
        picture.setPixmap(pixmap.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                        Qt.TransformationMode.FastTransformation))  # crisp pixels when small
        caption = QLabel(_caption(path))
        caption.setWordWrap(True)
        column.addWidget(picture)
        column.addWidget(caption)
        return panel


def _caption(path: str) -> str:
    from PIL import Image

    with Image.open(path) as im:
        text = im.text
    return f"step {text.get('step', '?')} · seed {text.get('seed', '?')}\n{text.get('prompt', '')}"
