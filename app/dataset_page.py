"""The dataset page: drop images in, browse them, edit captions, and read the health report.

Imports and the health check run in the engine as child processes; the page only shows their reports.
Caption edits are saved atomically shortly after typing stops (undo/redo: Ctrl+Z / Ctrl+Shift+Z).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.engine_client import EngineCall
from app.import_job import ImportJob
from app.widgets.tag_chips import TagChips, split_tags
from app.widgets.thumbnails import ThumbnailGrid

SAVE_DELAY_MS = 600


def write_caption(path: Path, text: str) -> None:
    """Atomic UTF-8 write: a crash leaves the old caption or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text.strip() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


BULK_OPS = [("Set trigger word", "--trigger"), ("Add tag", "--add"), ("Remove tag", "--remove"),
            ("Replace tag", "--replace-tag"), ("Find & replace", "--find")]


def dataset_tags(folder: Path) -> list[str]:
    counts: dict[str, int] = {}
    for caption in Path(folder).glob("*.txt"):
        try:
            text = caption.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            continue
        for tag in (t.strip() for t in text.split(",")):
            if tag:
                counts[tag] = counts.get(tag, 0) + 1
    return sorted(counts, key=lambda t: (-counts[t], t))


def _hbox(*widgets) -> QWidget:
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        row.addWidget(w)
    return box


class DatasetPage(QWidget):
    import_finished = Signal(object)
    check_finished = Signal(object)
    bulk_finished = Signal()

    def __init__(self, parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.engine = engine
        self.folder: Path | None = None
        self.job: ImportJob | None = None
        self.current: Path | None = None
        self._build()

    def _build(self) -> None:
        self.title = QLabel("No project open. Use File › New project, or drop images here after opening one.")
        self.check_button = QPushButton("Check dataset")
        self.check_button.clicked.connect(self.run_check)
        self.caption_button = QPushButton("Auto-caption…")
        self.caption_button.setToolTip("Caption the selection or the whole dataset with a local model")
        self.caption_button.clicked.connect(self.auto_caption)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.caption_button)
        top.addWidget(self.check_button)
        self.progress = QProgressBar()
        self.cancel_button = QPushButton("Cancel import")
        self.cancel_button.clicked.connect(lambda: self.job and self.job.cancel())
        bar = QHBoxLayout()
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.cancel_button)
        self.grid = ThumbnailGrid()
        self.grid.selectionModel().currentChanged.connect(lambda index, _: self.show_image(index))
        self.preview = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(320, 320)
        self.caption = QPlainTextEdit()
        self.caption.setPlaceholderText("caption: comma-separated tags or a sentence")
        self.caption.setMaximumHeight(120)
        self.caption_state = QLabel("")
        self.tokens = QLabel("")
        self.caption.textChanged.connect(self._count_tokens)
        self.chips = TagChips()
        self.chips.tags_edited.connect(self._tags_edited)
        self.caption.textChanged.connect(lambda: self.chips.set_tags(split_tags(self.caption.toPlainText())))
        self.save_timer = QTimer(self, singleShot=True, interval=SAVE_DELAY_MS)
        self.save_timer.timeout.connect(self.save_caption)
        self.caption.textChanged.connect(self.save_timer.start)
        self.health = QListWidget()
        self.health.itemClicked.connect(self._jump_to_file)
        side = QWidget()
        column = QVBoxLayout(side)
        for widget in (self.preview, QLabel("Caption"), self.caption, _hbox(self.tokens, self.caption_state),
                       self.chips,
                       QLabel("Health report"), self.health):
            column.addWidget(widget)
        split = QSplitter()
        split.addWidget(self.grid)
        split.addWidget(side)
        split.setSizes([700, 380])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self._bulk_bar())
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        self._set_importing(False)

    def _bulk_bar(self) -> QWidget:
        self.bulk_op = QComboBox()
        for label, flag in BULK_OPS:
            self.bulk_op.addItem(label, flag)
        self.bulk_value = QLineEdit(placeholderText="tag or text")
        self.completer = QCompleter([], self)  # the dataset's own tags, most frequent first
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.bulk_value.setCompleter(self.completer)
        self.bulk_other = QLineEdit(placeholderText="replace with")
        self.bulk_other.setVisible(False)
        self.bulk_op.currentIndexChanged.connect(
            lambda _i: self.bulk_other.setVisible(self.bulk_op.currentData() in ("--replace-tag", "--find")))
        self.bulk_scope = QComboBox()
        self.bulk_scope.addItems(["selected images", "whole dataset"])
        apply = QPushButton("Apply")
        apply.clicked.connect(self.apply_bulk)
        exclude = QPushButton("Exclude selected")
        exclude.setToolTip("Move the selected images (and captions) into the dataset's .excluded folder")
        exclude.clicked.connect(self.exclude_selected)
        self.bulk_state = QLabel("")
        return _hbox(self.bulk_op, self.bulk_value, self.bulk_other, self.bulk_scope, apply, exclude,
                     self.bulk_state)

    def apply_bulk(self) -> None:
        if self.folder is None or not self.bulk_value.text().strip():
            return
        self.save_caption()
        flag, value = self.bulk_op.currentData(), self.bulk_value.text().strip()
        args = ["dataset", "caption", str(self.folder), "--json"]
        args += [flag, value, self.bulk_other.text().strip()] if flag in ("--replace-tag",) else [flag, value]
        if flag == "--find":
            args += ["--replace-with", self.bulk_other.text()]
        if self.bulk_scope.currentIndex() == 0:
            selected = self.grid.selected_paths()
            if not selected:
                self.bulk_state.setText("select images first")
                return
            args += ["--only", *map(str, selected)]
        self.bulk_call = EngineCall(args, self, self.engine)
        self.bulk_call.done.connect(self._bulk_done)

    def _bulk_done(self, result: dict | None, error: str) -> None:
        if result is None:
            self.bulk_state.setText(error)
        else:
            skipped = f", {len(result['skipped'])} skipped (not UTF-8)" if result["skipped"] else ""
            self.bulk_state.setText(f"{len(result['changed'])} captions changed{skipped}")
        if self.current is not None:
            self._load_caption(self.current.with_suffix(".txt"))
        self.bulk_finished.emit()

    def auto_caption(self):
        if self.folder is None:
            return None
        from app.dialogs.caption_dialog import CaptionDialog

        self.save_caption()
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
        if self.current is not None and self.current == path:
            self._load_caption(path.with_suffix(".txt"))

    def exclude_selected(self) -> None:
        """Set images aside without deleting anything: scanners skip hidden folders."""
        if self.folder is None:
            return
        self.save_caption()
        aside = self.folder / ".excluded"
        aside.mkdir(exist_ok=True)
        for image in self.grid.selected_paths():
            for path in (image, image.with_suffix(".txt")):
                if path.exists():
                    os.replace(path, aside / path.name)
        self.current = None
        self.reload()

    def _count_tokens(self) -> None:
        from app.tokens import CLIP_LIMIT, count_tokens

        n = count_tokens(self.caption.toPlainText())
        over = n > CLIP_LIMIT
        self.tokens.setText(f"{n} / {CLIP_LIMIT} tokens" + (" — the rest is cut off in training" if over else ""))
        self.tokens.setStyleSheet("color: #b00020;" if over else "")

    def set_folder(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.title.setText(f"Dataset: {self.folder}  ·  drop images, folders or .zip files anywhere to import")
        self.reload()

    def reload(self) -> None:
        if self.folder is not None:
            self.grid.load_folder(self.folder)
            self.reload_tags()

    def reload_tags(self) -> None:
        if self.folder is not None:
            tags = dataset_tags(self.folder)
            self.completer.model().setStringList(tags)
            self.chips.completer.model().setStringList(tags)

    def shutdown(self) -> None:
        """The window is closing: thumbnails not started are dropped, running ones finish first (their
        signals object must outlive them)."""
        self.grid.pool.clear()
        self.grid.pool.waitForDone(5000)

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

    # -- captions ------------------------------------------------------------------------------------
    def show_image(self, index) -> None:
        self.save_caption()
        path = index.data(Qt.ItemDataRole.UserRole + 1)
        self.current = Path(path) if path else None
        if self.current is None:
            return
        pixmap = QPixmap(str(self.current))
        self.preview.setPixmap(pixmap.scaled(self.preview.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation))
        self._load_caption(self.current.with_suffix(".txt"))

    def _load_caption(self, path: Path) -> None:
        self.caption.blockSignals(True)
        try:
            text = path.read_bytes().decode("utf-8-sig") if path.exists() else ""
            self.caption.setPlainText(" ".join(text.split("\n")).strip())
            self.caption.setReadOnly(False)
            self.caption_state.setText("" if path.exists() else "no caption yet")
        except UnicodeDecodeError:
            self.caption.setPlainText("")
            self.caption.setReadOnly(True)
            self.caption_state.setText(f"{path.name} is not UTF-8: re-save it as UTF-8 to edit it here")
        finally:
            self.caption.blockSignals(False)
        self.caption.document().clearUndoRedoStacks()
        self.caption.document().setModified(False)
        self._count_tokens()
        self.chips.set_tags(split_tags(self.caption.toPlainText()))

    def _tags_edited(self, tags: list[str]) -> None:
        """A chip removed or a tag added: edit the text as one undoable step, then save."""
        cursor = self.caption.textCursor()
        cursor.select(cursor.SelectionType.Document)
        cursor.insertText(", ".join(tags))
        self.save_caption()

    def save_caption(self) -> None:
        self.save_timer.stop()
        if self.current is None or self.caption.isReadOnly() or not self.caption.document().isModified():
            return
        write_caption(self.current.with_suffix(".txt"), self.caption.toPlainText())
        self.caption.document().setModified(False)
        self.caption_state.setText("saved")

    # -- health report -------------------------------------------------------------------------------
    def run_check(self) -> None:
        if self.folder is None:
            return
        self.check_call = EngineCall(["dataset", "check", str(self.folder), "--json"], self, self.engine)
        # a bound method, not a lambda: Qt drops the connection if the page is deleted before the check ends
        self.check_call.done.connect(self._check_done)
        self.health.clear()
        self.health.addItem("checking…")

    def _check_done(self, report: dict | None, error: str) -> None:
        self.health.clear()
        if report is None:
            self.health.addItem(error)
            return
        buckets = ", ".join(f"{k}: {v}" for k, v in report["bucket_plan"]["buckets"].items())
        self.health.addItem(f"{report['images']} images · {report['steps_per_epoch']} steps per epoch · "
                            f"buckets {buckets}")
        for warning in report["warnings"]:
            self.health.addItem(f"⚠ {warning['message']}")
            for file in warning["files"]:
                item = QListWidgetItem(f"    {Path(file).name}")
                item.setData(Qt.ItemDataRole.UserRole, file)
                self.health.addItem(item)
        self.check_finished.emit(report)

    def _jump_to_file(self, item: QListWidgetItem) -> None:
        file = item.data(Qt.ItemDataRole.UserRole)
        if file:
            self.grid.select_path(Path(file))
