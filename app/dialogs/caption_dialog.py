"""Auto-caption the dataset (or the selection) with a local model: a WD14-style ONNX tagger (model.onnx +
selected_tags.csv) for tags, a BLIP-style image-to-text folder for a sentence, or a vision-language model
(Florence-2, Qwen2/2.5-VL, LLaVA/JoyCaption) with a prompt for a paragraph. Nothing is downloaded; the
folder is remembered. **Preview** captions one image (the first selected) and writes nothing, to try a
prompt before captioning all. Results stream into the grid as the engine writes them."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt, Signal
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
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app import settings
from app.caption_job import CaptionJob, CaptionRequest
from app.theme import ERROR
from app.widgets.rows import row
from trainer.shared.images import images_in

MODES = [("Only images without a caption", "fill"), ("Add to existing captions", "append"),
         ("Replace captions", "overwrite")]
LENGTHS = [("Paragraph", "paragraph"), ("Short: one sentence", "short"), ("Long: every detail", "long")]
# The config.json model types the engine captions with a prompt (trainer/data/captioning/prompts.py, which
# the GUI may not import): only to show the right fields, the engine decides for real.
FLORENCE_TYPES, CHAT_TYPES = {"florence2"}, {"qwen2_vl", "qwen2_5_vl", "llava", "llava_next", "llava_onevision"}
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
KIND_TEXT = {
    "tagger": "WD14-style tagger: booru tags with thresholds",
    "sentences": "image-to-text model: one sentence per image",
    "florence": "Florence-2: its caption task for the length you pick (a prompt may be a task token)",
    "chat": "vision-language model: answers the prompt (empty: a training-caption prompt for the length)",
    "": "choose a folder holding model.onnx + selected_tags.csv, or a transformers model folder (BLIP, "
        "Florence-2, Qwen2/2.5-VL, LLaVA, JoyCaption)",
}


def model_kind(folder: Path) -> str:
    """What the GUI can tell from the folder's files; the engine decides for real and explains refusals."""
    if (folder / "model.onnx").exists():
        return "tagger"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    model_type = config.get("model_type", "") if isinstance(config, dict) else ""
    if model_type in FLORENCE_TYPES:
        return "florence"
    chat = model_type in CHAT_TYPES or any((folder / name).is_file() for name in CHAT_TEMPLATE_FILES)
    return "chat" if chat else "sentences"


class CaptionDialog(QDialog):
    captioned = Signal(dict)
    done = Signal(bool, str)

    def __init__(self, folder: Path, selection: list[Path], parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.setWindowTitle("Auto-caption")
        self.folder, self.selection, self.engine = Path(folder), selection, engine
        self.job: CaptionJob | None = None
        self.preview_job: CaptionJob | None = None
        self._build()
        self.model.setText(settings.text(settings.CAPTION_MODEL))
        self.tags_model.setText(settings.text(settings.CAPTION_TAGS_MODEL))

    def _build(self) -> None:
        self.model = QLineEdit(placeholderText="a folder with a captioning model on this computer")
        self.model.textChanged.connect(self._model_changed)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.kind = QLabel("")
        self.kind.setWordWrap(True)
        self.mode = QComboBox()
        for label, value in MODES:
            self.mode.addItem(label, value)
        self.scope = QComboBox()
        count = len(self.selection)
        self.scope.addItem("the selected image" if count == 1 else f"the {count} selected images" if count else
                           "no selection")
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
        self.prompt_rows = self._prompt_rows()
        for label, widget in self.tag_rows + self.prompt_rows:
            form.addRow(label, widget)
        form.addRow("Trigger word", self.trigger)
        form.addRow("", self.force)
        form.addRow(*self._preview_row())
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

    def _preview_row(self) -> tuple[QPushButton, QLabel]:
        self.preview_button = QPushButton("Preview")
        self.preview_button.clicked.connect(self.preview)
        self.preview_text = QLabel("")
        self.preview_text.setWordWrap(True)
        self.preview_text.setTextInteractionFlags(self.preview_text.textInteractionFlags() |
                                                  Qt.TextInteractionFlag.TextSelectableByMouse)
        return self.preview_button, self.preview_text

    def _prompt_rows(self) -> list[tuple[QLabel, QWidget]]:
        """The vision-language model's settings: shown only for such a model."""
        self.length = QComboBox()
        for label, value in LENGTHS:
            self.length.addItem(label, value)
        self.prompt = QLineEdit()
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(0, 2048)
        self.max_tokens.setSpecialValueText("default for the length")
        self.tags_model = QLineEdit(placeholderText="optional: a WD14 tagger folder, for “tags, sentence”")
        browse = QPushButton("Browse…")
        browse.clicked.connect(lambda: self._browse(self.tags_model, "Tagger folder"))
        return [(QLabel("Caption length"), self.length), (QLabel("Prompt"), self.prompt),
                (QLabel("Max tokens"), self.max_tokens), (QLabel("Tags first from"), row(self.tags_model, browse))]

    def _browse(self, field: QLineEdit | None = None, title: str = "Captioning model folder") -> None:
        field = field or self.model
        folder = QFileDialog.getExistingDirectory(self, title, field.text())
        if folder:
            field.setText(folder)

    def _model_changed(self, text: str) -> None:
        kind = model_kind(Path(text)) if text.strip() else ""
        self.kind.setText(KIND_TEXT[kind])
        for rows, shown in ((self.tag_rows, kind == "tagger"), (self.prompt_rows, kind in ("florence", "chat"))):
            for label, widget in rows:
                label.setVisible(shown)
                widget.setVisible(shown)
        self.prompt.setPlaceholderText("empty: the caption task for the length, or e.g. <MORE_DETAILED_CAPTION>"
                                       if kind == "florence" else
                                       "empty: “Describe this image for a training caption…” for the length")
        self._enable(bool(kind))

    def _enable(self, model_ok: bool | None = None) -> None:
        if model_ok is None:
            model_ok = bool(model_kind(Path(self.model.text().strip()))) if self.model.text().strip() else False
        idle = self.job is None and self.preview_job is None
        self.start_button.setEnabled(model_ok and idle)
        image = self.preview_image()
        self.preview_button.setEnabled(model_ok and idle and image is not None)
        self.preview_button.setText(f"Preview on {image.name}" if image else "Preview")

    def preview_image(self) -> Path | None:
        """The image a preview captions: the first selected one, else the dataset's first."""
        if self.selection:
            return Path(self.selection[0])
        images = images_in(self.folder, recursive=False) if self.folder.is_dir() else []
        return images[0] if images else None

    def request(self, preview: bool = False) -> CaptionRequest:
        only = [self.preview_image()] if preview else self.selection if self.scope.currentIndex() == 0 else []
        return CaptionRequest(self.folder, Path(self.model.text().strip()), self.mode.currentData(),
                              self.threshold.value(), self.character_threshold.value(), self.exclude.text(),
                              self.trigger.text(), self.force.isChecked(), only, self.prompt.text(),
                              self.length.currentData(), self.max_tokens.value(), self._tags_model(), preview)

    def _tags_model(self) -> str:
        return self.tags_model.text().strip() if self.tags_model.isVisibleTo(self) else ""

    def _remember(self, request: CaptionRequest) -> None:
        settings.put(settings.CAPTION_MODEL, str(request.model))
        if request.tags_model:
            settings.put(settings.CAPTION_TAGS_MODEL, request.tags_model)

    def preview(self) -> None:
        request = self.request(preview=True)
        self._remember(request)
        self._show_preview(f"Loading the model to caption {request.only[0].name}…")
        self.preview_job = CaptionJob(request, self, self.engine)
        self.preview_job.captioned.connect(self._previewed)
        self.preview_job.finished.connect(self._preview_finished)
        self._enable()
        self.preview_job.start()

    def _previewed(self, event: dict) -> None:
        if event.get("status") == "skipped":  # the image could not be read or captioned
            self._show_preview(event.get("reason", ""), error=True)
            return
        note = f"\n(note: {event['reason']})" if event.get("reason") else ""
        self._show_preview(event.get("caption", "") + note)

    def _preview_finished(self, ok: bool, message: str) -> None:
        self.preview_job = None
        if not ok:
            self._show_preview(message, error=True)
        self._enable()

    def _show_preview(self, text: str, error: bool = False) -> None:
        # Plain text: a caption may hold "<" (Florence-2's task tokens, a user's prompt echoed back).
        self.preview_text.setTextFormat(Qt.TextFormat.PlainText)
        self.preview_text.setStyleSheet(f"color: {ERROR}" if error else "")
        self.preview_text.setText(text)

    def start(self) -> None:
        request = self.request()
        self._remember(request)
        total = len(request.only) or len(images_in(self.folder, recursive=False))
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(0)
        self.results.clear()
        self.status.setText("Loading the model…")
        self.job = CaptionJob(request, self, self.engine)
        self.job.captioned.connect(self._one)
        self.job.finished.connect(self._finished)
        self._enable()
        self.cancel_button.setText("Stop")
        self.job.start()

    def _one(self, event: dict) -> None:
        self.progress.setValue(self.progress.value() + 1)
        name = Path(event.get("path", "")).name
        if event.get("status") == "written":  # the engine's note, e.g. a caption past CLIP's 75 tokens
            text = event.get("caption", "") + (f"  (note: {event['reason']})" if event.get("reason") else "")
        else:
            text = f"skipped: {event.get('reason')}"
        self.results.addItem(f"{name}: {text}")
        self.results.scrollToBottom()
        self.status.setText(f"{self.progress.value()} of {self.progress.maximum()}")
        self.captioned.emit(event)

    def _finished(self, ok: bool, message: str) -> None:
        self.job = None
        self.status.setText(message if ok else f"<span style='color:{ERROR}'>{message}</span>")
        self._enable()
        self.cancel_button.setText("Close")
        self.done.emit(ok, message)

    def cancel(self) -> None:
        if self.job is not None:
            self.status.setText("Stopping after the current image…")
            self.job.cancel()
        elif self.preview_job is not None:
            self.preview_job.cancel()
        else:
            self.reject()

    def closeEvent(self, event) -> None:
        for job in (self.job, self.preview_job):
            if job is not None:
                job.cancel()
        super().closeEvent(event)


def _spin(value: float) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(0.01, 0.99)
    spin.setSingleStep(0.05)
    spin.setValue(value)
    return spin

