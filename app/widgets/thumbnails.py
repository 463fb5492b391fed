"""A thumbnail grid that stays smooth with thousands of images.

Model/view (one QStandardItem per image, no widget per image); thumbnails are made on a thread pool and
cached on disk (keyed by path, size and mtime), then set on the GUI thread through a queued signal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QSize, QStandardPaths, Qt, QThreadPool, Signal
from PySide6.QtGui import QIcon, QImage, QImageReader, QPixmap, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QListView

from trainer.shared.dataset_layout import dataset_images

SIDE = 128
PATH_ROLE = Qt.ItemDataRole.UserRole + 1


def thumb_cache_dir() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.CacheLocation) or str(Path.home())
    return Path(base) / "thumbnails"


class _Signals(QObject):
    done = Signal(str, QImage)


class _ThumbJob(QRunnable):
    def __init__(self, path: Path, signals: _Signals):
        super().__init__()
        self.path, self.signals = path, signals

    def run(self) -> None:
        try:
            stat = self.path.stat()
        except OSError:
            return  # moved or deleted since it was listed (excluded, renamed outside the app)
        key = hashlib.sha1(f"{self.path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        cached = thumb_cache_dir() / f"{key}.png"
        image = QImage(str(cached)) if cached.exists() else QImage()
        if image.isNull():
            reader = QImageReader(str(self.path))
            reader.setAutoTransform(True)  # EXIF orientation, as training sees it
            size = reader.size()
            if size.isValid():
                reader.setScaledSize(size.scaled(SIDE, SIDE, Qt.AspectRatioMode.KeepAspectRatio))
            image = reader.read()
            if not image.isNull():
                cached.parent.mkdir(parents=True, exist_ok=True)
                image.save(str(cached))
        self.signals.done.emit(str(self.path), image)


class ThumbnailGrid(QListView):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_ = QStandardItemModel(self)
        self.setModel(self.model_)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(SIDE, SIDE))
        self.setGridSize(QSize(SIDE + 24, SIDE + 36))
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setUniformItemSizes(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self.signals = _Signals()
        self.signals.done.connect(self._thumbnail_ready)
        self.items: dict[str, QStandardItem] = {}
        self.placeholder = QIcon(QPixmap(SIDE, SIDE))

    def load_folder(self, folder: Path) -> None:
        self.model_.clear()
        self.items.clear()
        paths = dataset_images(folder)
        for path in paths:
            item = QStandardItem(self.placeholder, path.name)
            item.setData(str(path), PATH_ROLE)
            item.setToolTip(str(path))
            self.items[str(path)] = item
            self.model_.appendRow(item)
            self.pool.start(_ThumbJob(path, self.signals))

    def _thumbnail_ready(self, path: str, image: QImage) -> None:
        item = self.items.get(path)
        if item is not None and not image.isNull():
            item.setIcon(QIcon(QPixmap.fromImage(image)))

    def mark_captioned(self, path: Path, caption: str) -> None:
        """An auto-caption just landed: show it on hover, and mark the tile so progress is visible."""
        item = self.items.get(str(path))
        if item is not None:
            item.setText(f"✓ {Path(path).name}")
            item.setToolTip(caption)

    def selected_paths(self) -> list[Path]:
        return [Path(i.data(PATH_ROLE)) for i in self.selectedIndexes()]

    def select_path(self, path: Path) -> None:
        item = self.items.get(str(path))
        if item is not None:
            self.setCurrentIndex(item.index())
            self.scrollTo(item.index())
