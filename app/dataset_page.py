"""The dataset page: drop images in, browse them, edit captions, and read the health report.

Imports, bulk edits and the health check run in the engine as child processes; the page only shows their
reports. The parts are widgets of their own: the thumbnail grid, the caption editor, the bulk-edit bar and
the health view; this page wires them together and owns the folder.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.closing import Job, engine_job, pool_job
from app.import_job import ImportJob
from app.widgets.bulk_edit_bar import BulkEditBar
from app.widgets.caption_editor import CaptionEditor
from app.widgets.health_view import HealthView
from app.widgets.thumbnails import ThumbnailGrid
from trainer.shared.captions import caption_path, read_caption, split_tags
from trainer.shared.dataset_layout import dataset_images
from trainer.shared.images import set_aside


def dataset_tags(folder: Path) -> list[str]:
    """The dataset's tags, most frequent first (for completion)."""
    counts = Counter(tag for image in dataset_images(folder) for tag in split_tags(read_caption(
        caption_path(image)).text))
    return sorted(counts, key=lambda t: (-counts[t], t))


class DatasetPage(QWidget):
    import_finished = Signal(object)
    check_finished = Signal(object)
    bulk_finished = Signal()
    dataset_changed = Signal()      # images added or set aside: step estimates are out of date

    def __init__(self, parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.engine = engine
        self.folder: Path | None = None
        self.job: ImportJob | None = None
        self._build()

    def _build(self) -> None:
        self.title = QLabel("No project open. Use File › New project, or drop images here after opening one.")
        self.title.setWordWrap(True)
        icon = self.style().standardIcon
        self.check_button = QPushButton(icon(QStyle.StandardPixmap.SP_DialogApplyButton), "Check dataset")
        self.check_button.setToolTip("The engine's health report: sizes, buckets, captions, duplicates")
        self.check_button.clicked.connect(self.run_check)
        self.caption_button = QPushButton(icon(QStyle.StandardPixmap.SP_FileDialogDetailedView), "Auto-caption…")
        self.caption_button.setToolTip("Caption the selection or the whole dataset with a local model")
        self.caption_button.clicked.connect(self.auto_caption)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.caption_button)
        top.addWidget(self.check_button)
        self.progress = QProgressBar()
        self.cancel_button = QPushButton("Cancel import")
        self.cancel_button.clicked.connect(self._cancel_import)
        bar = QHBoxLayout()
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.cancel_button)
        self.grid = ThumbnailGrid()
        self.grid.selectionModel().currentChanged.connect(
            lambda index, _: self.editor.show_image(index.data(Qt.ItemDataRole.UserRole + 1)))
        self.editor = CaptionEditor()
        self.editor.saved.connect(lambda _path: self.reload_tags())
        self.bulk = BulkEditBar(self.grid.selected_paths, self, self.engine)
        self.bulk.about_to_edit.connect(self.editor.save)
        self.bulk.finished.connect(self._bulk_done)
        self.bulk.exclude_requested.connect(self.exclude_selected)
        self.health = HealthView(self, self.engine)
        self.health.checked.connect(self.check_finished)
        self.health.file_chosen.connect(self.grid.select_path)
        self.setLayout(self._layout(top, bar))
        self._set_importing(False)

    def _layout(self, top: QHBoxLayout, bar: QHBoxLayout) -> QVBoxLayout:
        side = QWidget()
        column = QVBoxLayout(side)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.editor)
        column.addWidget(QLabel("Health report"))
        column.addWidget(self.health, 1)
        split = QSplitter()
        split.addWidget(self.grid)
        split.addWidget(side)
        split.setSizes([700, 380])
        layout = QVBoxLayout()
        layout.addLayout(top)
        layout.addWidget(self.bulk)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        return layout

    def save_caption(self) -> None:
        self.editor.save()

    def set_folder(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.bulk.folder = self.folder
        self.editor.preview.dataset_root = self.folder   # masks/ may sit in a subset's folder or the dataset's
        self.title.setText(f"Dataset: {self.folder}  ·  drop images, folders or .zip files anywhere to import")
        self.reload()

    def reload(self) -> None:
        if self.folder is not None:
            self.grid.load_folder(self.folder)
            self.reload_tags()
            self.dataset_changed.emit()

    def reload_tags(self) -> None:
        if self.folder is not None:
            tags = dataset_tags(self.folder)
            self.bulk.set_known_tags(tags)
            self.editor.set_known_tags(tags)

    def shutdown(self) -> None:
        """The window closes (its jobs have ended): the caption being typed is kept."""
        self.editor.save()

    def closing_jobs(self) -> list[Job]:
        """What must end before the window closes: an import is cancelled (each file is written whole),
        auto-captioning stops between images, thumbnails not started are dropped."""
        jobs = [Job("Cancelling the import… (the files already copied stay)", lambda: self.job is not None,
                    self._cancel_import, self._cancel_import),
                pool_job("Finishing the thumbnails being made…", self.grid.pool)]
        dialog = getattr(self, "caption_dialog", None)
        for job in (dialog.job, dialog.preview_job) if dialog is not None else ():
            if job is not None:
                jobs.append(engine_job("Stopping the auto-captioning… (the captions written so far stay)",
                                       job.engine, job.cancel))
        return jobs

    def _cancel_import(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _bulk_done(self) -> None:
        self.editor.reload()
        self.reload_tags()
        self.bulk_finished.emit()

    def exclude_selected(self) -> None:
        """Set images aside without deleting anything: dataset scans skip hidden folders."""
        if self.folder is None:
            return
        self.editor.save()
        for image in self.grid.selected_paths():
            set_aside(image)
        self.editor.clear()
        self.reload()

    # -- auto-caption --------------------------------------------------------------------------------
    def auto_caption(self):
        if self.folder is None:
            return None
        from app.dialogs.caption_dialog import CaptionDialog

        self.editor.save()
        dialog = CaptionDialog(self.folder, self.grid.selected_paths(), self, self.engine)
        dialog.captioned.connect(self._auto_captioned)
        dialog.done.connect(lambda _ok, _m: (self.reload_tags(), self.run_check()))
        dialog.open()
        self.caption_dialog = dialog
        return dialog

    def _auto_captioned(self, event: dict) -> None:
        if event.get("status") != "written":
            return
        path = Path(event["path"])
        self.grid.mark_captioned(path, event.get("caption", ""))
        if self.editor.current == path:
            self.editor.reload()

    # -- import --------------------------------------------------------------------------------------
    def import_paths(self, sources: list[Path]) -> None:
        if self.folder is None or self.job is not None:
            return
        self.job = ImportJob(sources, self.folder, self, self.engine)
        self.job.progress.connect(lambda done, total: (self.progress.setMaximum(total),
                                                       self.progress.setValue(done)))
        self.job.finished.connect(self._import_done)
        self._set_importing(True)
        self.job.start()

    def _set_importing(self, on: bool) -> None:
        self.progress.setVisible(on)
        self.cancel_button.setVisible(on)
        self.progress.setValue(0)

    def _import_done(self, report) -> None:
        cancelled = self.job.cancelled
        self.job = None
        self._set_importing(False)
        self.reload()
        self.import_finished.emit(report)
        if report is not None and self.isVisible():
            self._show_report(report)
        elif cancelled:
            self.title.setText(self.title.text() + "  ·  import cancelled (files already copied were kept)")

    def _show_report(self, report: dict) -> None:
        def listed(status: str) -> list[str]:
            return [f"{f['source']}: {f['reason']}" for f in report["files"] if f["status"] == status]

        box = QMessageBox(self)
        box.setWindowTitle("Import finished")
        box.setText(f"{report['imported']} imported, {report['duplicates']} already there, "
                    f"{report['refused']} refused.")
        # a duplicate's line names the copy kept and where its caption went: a user looking for a file sees why
        details = [f"{title}:\n" + "\n".join(lines) for title, lines in
                   (("Refused", listed("refused")), ("Duplicates, not copied", listed("duplicate"))) if lines]
        if details:
            box.setDetailedText("\n\n".join(details))
        box.open()

    # -- health report -------------------------------------------------------------------------------
    def run_check(self) -> None:
        if self.folder is not None:
            self.health.run(self.folder)
