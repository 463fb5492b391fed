"""Auto-caption the dataset (or the selection) with a local model: a BLIP-style image-to-text folder for
sentences, or a WD14-style ONNX tagger (model.onnx + selected_tags.csv) for tags. Nothing is downloaded;
the folder is remembered. Results stream into the grid as the engine writes them."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.caption_job import CaptionJob, CaptionRequest
from app.widgets.rows import row

MODES = [("Only images without a caption", "fill"), ("Add to existing captions", "append"),
         ("Replace captions", "overwrite")]
MODEL_KEY = "caption_model_folder"


def model_kind(folder: Path) -> str:
    """What the GUI can tell from the folder's files; the engine decides for real and explains refusals."""
    if (folder / "model.onnx").exists():
        return "tagger"
    return "sentences" if (folder / "config.json").exists() else ""


class CaptionDialog(QDialog):
    captioned = Signal(dict)
    done = Signal(bool, str)

    def __init__(self, folder: Path, selection: list[Path], parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.setWindowTitle("Auto-caption")
        self.folder, self.selection, self.engine = Path(folder), selection, engine
        self.settings = QSettings("LoRA Studio", "LoRA Studio")
        self.job: CaptionJob | None = None
        self._build()
        self.model.setText(self.settings.value(MODEL_KEY, "", type=str))

    def _build(self) -> None:
        self.model = QLineEdit(placeholderText="a folder with a captioning model on this computer")
        self.model.textChanged.connect(self._model_changed)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.kind = QLabel("")
        self.mode = QComboBox()
        for label, value in MODES:
            self.mode.addItem(label, value)
        self.scope = QComboBox()
        self.scope.addItem(f"the {len(self.selection)} selected images" if self.selection else "no selection")
        self.scope.addItem("the whole dataset")
        self.scope.setCurrentIndex(0 if self.selection else 1)
        self.scope.model().item(0).setEnabled(bool(self.selection))
        self.threshold = _spin(0.35)
        self.character_threshold = _spin(0.85)
        self.exclude = QLineEdit(placeholderText="tags never to write, comma-separated")
        self.trigger = QLineEdit(placeholderText="optional: put this word first")
        self.force = QCheckBox("Also replace captions I edited by hand since the last auto-caption")
        form = QFormLayout()
        form.addRow("Model folder", row(self.model, browse))
        form.addRow("", self.kind)
        form.addRow("Caption", self.scope)
        form.addRow("Mode", self.mode)
        self.tag_rows = [(QLabel("General tag threshold"), self.threshold),
                         (QLabel("Character tag threshold"), self.character_threshold),
                         (QLabel("Exclude tags"), self.exclude)]
        for label, widget in self.tag_rows:
            form.addRow(label, widget)
        form.addRow("Trigger word", self.trigger)
        form.addRow("", self.force)
        self.progress = QProgressBar()
        self.results = QListWidget()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.start_button, self.cancel_button = QPushButton("Caption"), QPushButton("Cancel")
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.results, 1)
        layout.addWidget(self.status)
        layout.addWidget(row(QWidget(), self.start_button, self.cancel_button))
        self.resize(620, 560)
        self._model_changed("")

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Captioning model folder", self.model.text())
        if folder:
            self.model.setText(folder)

    def _model_changed(self, text: str) -> None:
        kind = model_kind(Path(text)) if text.strip() else ""
        self.kind.setText({"tagger": "WD14-style tagger: booru tags with thresholds",
                           "sentences": "image-to-text model: one sentence per image",
                           "": "choose a folder holding model.onnx + selected_tags.csv, or a "
                               "transformers image-to-text model (BLIP, Florence-2, …)"}[kind])
        for label, widget in self.tag_rows:
            label.setVisible(kind == "tagger")
            widget.setVisible(kind == "tagger")
        self.start_button.setEnabled(bool(kind) and self.job is None)

    def request(self) -> CaptionRequest:
        return CaptionRequest(self.folder, Path(self.model.text().strip()), self.mode.currentData(),
                              self.threshold.value(), self.character_threshold.value(), self.exclude.text(),
                              self.trigger.text(), self.force.isChecked(),
                              self.selection if self.scope.currentIndex() == 0 else [])

    def start(self) -> None:
        request = self.request()
        self.settings.setValue(MODEL_KEY, str(request.model))
        total = len(request.only) or sum(1 for p in self.folder.iterdir() if p.suffix.lower() in
                                         {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(0)
        self.results.clear()
        self.status.setText("Loading the model…")
        self.job = CaptionJob(request, self, self.engine)
        self.job.captioned.connect(self._one)
        self.job.finished.connect(self._finished)
        self.start_button.setEnabled(False)
        self.cancel_button.setText("Stop")
        self.job.start()

    def _one(self, event: dict) -> None:
        self.progress.setValue(self.progress.value() + 1)
        name = Path(event.get("path", "")).name
        text = event.get("caption", "") if event.get("status") == "written" else f"skipped: {event.get('reason')}"
        self.results.addItem(f"{name}: {text}")
        self.results.scrollToBottom()
        self.status.setText(f"{self.progress.value()} of {self.progress.maximum()}")
        self.captioned.emit(event)

    def _finished(self, ok: bool, message: str) -> None:
        self.job = None
        self.status.setText(message if ok else f"<span style='color:#b00020'>{message}</span>")
        self.start_button.setEnabled(True)
        self.cancel_button.setText("Close")
        self.done.emit(ok, message)

    def cancel(self) -> None:
        if self.job is not None:
            self.status.setText("Stopping after the current image…")
            self.job.cancel()
        else:
            self.reject()

    def closeEvent(self, event) -> None:
        if self.job is not None:
            self.job.cancel()
        super().closeEvent(event)


def _spin(value: float) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(0.01, 0.99)
    spin.setSingleStep(0.05)
    spin.setValue(value)
    return spin

