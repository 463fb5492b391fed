"""A thumbnail grid that stays smooth with thousands of images.

Model/view (one QStandardItem per image, no widget per image); thumbnails are made on a thread pool and
cached on disk (keyed by path, size and mtime), then set on the GUI thread through a queued signal. An image
with a loss mask (trainer.shared.masks) gets a small half-black, half-white badge, drawn after the cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtCore import QObject, QRectF, QRunnable, QSize, QStandardPaths, Qt, QThreadPool, Signal
from PySide6.QtGui import (
    QColor,
    QIcon,
    QImage,
    QImageReader,
    QPainter,
    QPixmap,
    QStandardItem,
    QStandardItemModel,
)
from PySide6.QtWidgets import QAbstractItemView, QListView

from trainer.shared import masks
from trainer.shared.dataset_layout import dataset_images

SIDE = 128
PATH_ROLE = Qt.ItemDataRole.UserRole + 1
MASK_ROLE = Qt.ItemDataRole.UserRole + 2   # trainer.shared.masks.mask_source of the image, once its thumbnail is made


def thumb_cache_dir() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.CacheLocation) or str(Path.home())
    return Path(base) / "thumbnails"


class _Signals(QObject):
    done = Signal(str, QImage, str)   # path, thumbnail, its mask source ("" = none)


def mask_badge(image: QImage) -> QImage:
    """A copy of the thumbnail with a half-black, half-white disc in its top-right corner: "has a loss mask"."""
    badged = image.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
    side = max(10, min(badged.width(), badged.height()) // 6)
    disc = QRectF(badged.width() - side - 3, 3, side, side)
    painter = QPainter(badged)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QColor(128, 128, 128))
    painter.setBrush(QColor("white"))
    painter.drawEllipse(disc)
    painter.setBrush(QColor("black"))
    painter.drawPie(disc, 90 * 16, 180 * 16)   # the left half: what the loss ignores
    painter.end()
    return badged


class _ThumbJob(QRunnable):
    def __init__(self, path: Path, subset_folder: Path, signals: _Signals):
        super().__init__()
        self.path, self.subset_folder, self.signals = path, subset_folder, signals

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
        source = masks.mask_source(self.path, self.subset_folder)
        self.signals.done.emit(str(self.path), mask_badge(image) if source and not image.isNull() else image, source)


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
        subsets = masks.subset_folders(folder)
        for path in paths:
            item = QStandardItem(self.placeholder, path.name)
            item.setData(str(path), PATH_ROLE)
            item.setToolTip(str(path))
            self.items[str(path)] = item
            self.model_.appendRow(item)
            self.pool.start(_ThumbJob(path, masks.subset_folder_of(path, subsets), self.signals))

    def _thumbnail_ready(self, path: str, image: QImage, mask_source: str) -> None:
        item = self.items.get(path)
        if item is not None and not image.isNull():
            item.setIcon(QIcon(QPixmap.fromImage(image)))
        if item is not None and mask_source:
            item.setData(mask_source, MASK_ROLE)
            item.setToolTip(f"{path}\nloss mask: {'alpha channel' if mask_source == masks.FROM_ALPHA else 'masks/ folder'}")

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
