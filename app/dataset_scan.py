"""The dataset's images with their sizes, read on a worker thread for the training page's step estimate.

Reading every image header takes seconds on a large dataset or a slow disk; on the GUI thread that froze
the window each time the Training tab was shown. Here the scan runs on a one-thread pool and its result
comes back by a queued signal. Each request has a number, and an answer to an older request (another
project, a dataset changed again since) is dropped. Before reading headers the worker compares a cheap
fingerprint of the folder (names, sizes, modification times) with the last scan's: when nothing changed,
nothing is read again.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from trainer.shared import steps as step_count
from trainer.shared.dataset_layout import read_dataset, subset_images
from trainer.shared.errors import UserError


def fingerprint(root: Path) -> tuple:
    """What the scan depends on: dataset.toml and the images it would read (their paths carry the kohya
    `N_name` repeats). Captions are left out: editing one changes no step count."""
    try:
        images = [path for path, _subset in subset_images(read_dataset(root))]
    except UserError as exc:
        return ("unreadable", exc.message)
    files = [root / "dataset.toml", *images]
    return tuple((str(path), stat.st_size, stat.st_mtime_ns) for path in files if (stat := _stat(path)))


def _stat(path: Path):
    try:
        return path.stat()
    except OSError:
        return None   # absent (no dataset.toml) or gone since it was listed


class _Signals(QObject):
    # request number, folder, fingerprint, images (None: unchanged since the last scan), problem
    done = Signal(int, str, object, object, str)


class _Scan(QRunnable):
    def __init__(self, number: int, folder: Path, last: tuple | None, signals: _Signals):
        super().__init__()
        self.number, self.folder, self.last, self.signals = number, folder, last, signals

    def run(self) -> None:
        seen = fingerprint(self.folder)
        if seen == self.last:
            self.signals.done.emit(self.number, str(self.folder), seen, None, "")
            return
        try:
            images, problem = step_count.scan(self.folder), ""
        except UserError as exc:
            images, problem = [], exc.message
        self.signals.done.emit(self.number, str(self.folder), seen, images, problem)


class DatasetScanner(QObject):
    """`scan(folder)` in the background; `scanned(images, problem)` on the GUI thread when it changed."""
    scanned = Signal(object, str)   # trainer.shared.steps.scan's images, the problem that stopped it ("" if none)
    settled = Signal()              # the latest request is answered (changed or not): tests wait on it

    def __init__(self, parent=None):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)   # one scan at a time: a newer request waits, an older answer is dropped
        self.signals = _Signals()        # no parent: a scan still running holds it alive (thumbnails do the same)
        self.signals.done.connect(self._done)
        self.requested = self.answered = 0
        self.known: tuple[str, tuple] | None = None   # (folder, fingerprint) of the images last delivered

    @property
    def pending(self) -> bool:
        """A request is on its way: the step estimate may be out of date."""
        return self.requested != self.answered

    def scan(self, folder: Path, force: bool = False) -> None:
        """Count FOLDER's images again, unless (without FORCE) they are as they were at the last scan."""
        self.requested += 1
        folder = Path(folder)
        last = self.known[1] if self.known and self.known[0] == str(folder) and not force else None
        self.pool.clear()   # a queued scan nobody will want any more
        self.pool.start(_Scan(self.requested, folder, last, self.signals))

    def _done(self, number: int, folder: str, seen: tuple, images, problem: str) -> None:
        if number != self.requested:
            return   # an older request: the dataset or the project changed since
        self.answered = number
        self.known = (folder, seen)
        if images is not None:
            self.scanned.emit(images, problem)
        self.settled.emit()
