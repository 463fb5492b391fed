"""Wizard pages 1-3: what you are training, the base model, and the images (with the health report inline)."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWizardPage,
)

from app import settings
from app.engine_client import EngineCall
from app.import_job import ImportJob
from app.model_check import ModelCheck, describe
from app.project import Project, ProjectError
from app.theme import ERROR, WARNING
from app.wizard.state import DEMO_MODEL, WizardState

BLOCKING = {"empty": "Add at least one image to train on."}


def _wrap(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    return label


class KindPage(QWizardPage):
    def __init__(self, state: WizardState):
        super().__init__()
        self.state = state
        self.setTitle("What are you training?")
        self.setSubTitle("This picks the recipe: how captions are written, how much the LoRA learns, and for how "
                         "long.")
        self.character = QRadioButton("A character, person or object: one subject you call up with a trigger "
                                      "word")
        self.style = QRadioButton("A style: a look, medium or artist's hand, applied to anything you prompt")
        self.group = QButtonGroup(self)
        for button in (self.character, self.style):
            self.group.addButton(button)
        self.character.setChecked(True)
        self.name = QLineEdit(state.name)
        self.name.textChanged.connect(self.completeChanged)
        self.where = QLabel("")
        self.name.textChanged.connect(self._show_where)
        change = QPushButton("Change folder…")
        change.clicked.connect(self._choose_folder)
        layout = QVBoxLayout(self)
        for widget in (self.character, self.style):
            layout.addWidget(widget)
        layout.addSpacing(16)
        layout.addWidget(QLabel("Name of the LoRA (also its project folder and file name):"))
        layout.addWidget(self.name)
        row = QHBoxLayout()
        row.addWidget(self.where, 1)
        row.addWidget(change)
        layout.addLayout(row)
        layout.addStretch(1)
        self._show_where()

    def clean_name(self) -> str:
        return re.sub(r"[^\w.-]+", "-", self.name.text().strip()).strip(".-")

    def _show_where(self) -> None:
        self.where.setText(f"Project folder: {self.state.projects_dir / (self.clean_name() or '…')}")

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Where projects are kept", str(self.state.projects_dir))
        if folder:
            self.state.projects_dir = Path(folder)
            self._show_where()

    def isComplete(self) -> bool:
        return bool(self.clean_name())

    def validatePage(self) -> bool:
        self.state.kind = "style" if self.style.isChecked() else "character"
        self.state.name = self.clean_name()
        try:
            self.state.project = Project.create(self.state.projects_dir / self.state.name)
        except (ProjectError, OSError) as exc:
            self.setSubTitle(f"Cannot create the project folder: {exc}")
            return False
        return True


class ModelPage(QWizardPage):
    def __init__(self, state: WizardState):
        super().__init__()
        self.state = state
        self.checked_ok = False
        self.setTitle("Base model")
        self.setSubTitle("The checkpoint your LoRA is trained on and will be used with: a .safetensors or "
                         ".ckpt file, or a diffusers folder.")
        self.model_check = ModelCheck(self)
        self.model_check.checked.connect(self._checked)
        self.own = QRadioButton("My model file")
        self.demo = QRadioButton("The built-in demo model (tiny, random weights: shows the whole flow in a "
                                 "minute, its pictures are noise)")
        self.model = QComboBox(editable=True)
        self.model.addItems(settings.recent(settings.RECENT_MODELS))
        self.model.setCurrentText("")
        self.model.currentTextChanged.connect(self._check)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.own.toggled.connect(self._mode_changed)
        self.info = _wrap("")
        self.gpu = _wrap("Looking for a GPU…")
        layout = QVBoxLayout(self)
        layout.addWidget(self.own)
        row = QHBoxLayout()
        row.addWidget(self.model, 1)
        row.addWidget(browse)
        layout.addLayout(row)
        layout.addWidget(self.info)
        layout.addWidget(self.demo)
        layout.addSpacing(16)
        layout.addWidget(self.gpu)
        layout.addStretch(1)
        self.own.setChecked(True)

    def show_system(self) -> None:
        system = self.state.system
        self.gpu.setText("Looking for a GPU…" if system is None else f"<b>GPU:</b> {system.describe()}")
        if system is not None and system.gpu is None and not self.model.currentText().strip():
            self.demo.setChecked(True)  # no CUDA: the demo is what this machine can show quickly

    def _mode_changed(self, own: bool) -> None:
        self.model.setEnabled(own)
        if own:
            self._check(self.model.currentText())
        else:
            self._check(DEMO_MODEL)  # the engine says what the demo's family is, as for any model
        self.completeChanged.emit()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Base model", "", "Models (*.safetensors *.ckpt)")
        if path:
            self.model.setCurrentText(path)

    def _check(self, text: str) -> None:
        self.checked_ok = False
        self.state.family = None
        self.completeChanged.emit()
        path = text.strip()
        if not path:
            self.info.setText("")
            return
        self.info.setText("Checking the file…")
        self.model_check.check(path)

    def _checked(self, path: str, info: dict | None, error: str) -> None:
        if path != (DEMO_MODEL if self.demo.isChecked() else self.model.currentText().strip()):
            return  # another file was picked meanwhile
        if info is None:
            self.info.setText(f"<span style='color:{ERROR}'>{error}</span>")
            return
        label = info["family"]["label"]
        if info.get("missing_files"):  # FLUX.1's AE, CLIP-L, T5: the engine looked beside it and in ComfyUI's folders
            self.info.setText(f"<span style='color:{ERROR}'>{label}: its other files were not found: "
                              f"{'; '.join(info['missing_files'])}. Put them beside the model file.</span>"
                              + licence_note(info["family"]))
            return
        self.state.model_path, self.state.family = path, info["family"]
        if path == DEMO_MODEL:
            self.state.model_text = f"built-in tiny demo model ({label} architecture)"
            self.info.setText(f"✓ {self.state.model_text}")
        else:
            self.state.model_text = describe(info, path)
            self.info.setText(f"✓ {label} ({info.get('prediction_type', '')})" + licence_note(info["family"]))
        self.checked_ok = True
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return self.checked_ok


def licence_note(family: dict) -> str:
    """The model's licence, where it restricts its use (the engine's family facts say so)."""
    return f"<br><span style='color:{WARNING}'>Licence: {family['licence']}</span>" if family.get("licence") else ""


class ImagesPage(QWizardPage):
    def __init__(self, state: WizardState):
        super().__init__()
        self.state = state
        self.job: ImportJob | None = None
        self.setTitle("Your images")
        self.setSubTitle("Drop images, folders or .zip archives here. They are copied into the project; your "
                         "originals are never changed. 15-50 varied images are a good start.")
        self.setAcceptDrops(True)
        self.drop = QLabel("Drop images here")
        self.drop.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.drop.setMinimumHeight(90)
        self.drop.setStyleSheet("border: 2px dashed palette(mid); border-radius: 8px; font-size: 15px;")
        files, folder = QPushButton("Add images…"), QPushButton("Add a folder…")
        files.clicked.connect(self._add_files)
        folder.clicked.connect(self._add_folder)
        self.progress = QProgressBar()
        self.progress.hide()
        self.report = _wrap("")
        row = QHBoxLayout()
        row.addWidget(files)
        row.addWidget(folder)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.drop)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(self.report, 1)

    def initializePage(self) -> None:
        self.refresh()

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.import_paths(paths)
            event.acceptProposedAction()

    def _add_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add images", "", "Images and archives (*.png *.jpg "
                                                "*.jpeg *.webp *.bmp *.tif *.tiff *.gif *.zip)")
        if files:
            self.import_paths([Path(f) for f in files])

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of images")
        if folder:
            self.import_paths([Path(folder)])

    def import_paths(self, paths: list[Path]) -> None:
        if self.job is not None or self.state.project is None:
            return
        self.job = ImportJob(paths, self.state.project.dataset, self)
        self.job.progress.connect(lambda done, total: (self.progress.setMaximum(total),
                                                       self.progress.setValue(done)))
        self.job.finished.connect(self._imported)
        self.progress.show()
        self.job.start()

    def _imported(self, report: dict | None) -> None:
        self.job = None
        self.progress.hide()
        refused = [e for e in (report or {}).get("entries", []) if e.get("status") == "refused"]
        self.last_refused = "".join(f"<br>✗ {Path(e['source']).name}: {e['reason']}" for e in refused[:8])
        self.refresh()

    def refresh(self) -> None:
        if self.state.project is None:
            return
        family = self.state.family  # the chosen model's buckets and tokenizer (the engine's facts)
        args = ["--arch", family["id"], "--resolution", str(family["native_resolution"])] if family else []
        call = EngineCall(["dataset", "check", str(self.state.project.dataset), *args, "--json"], self)
        call.done.connect(self._checked)
        self.report.setText("Checking the images…")

    def _checked(self, health: dict | None, error: str) -> None:
        self.state.health = health
        self.state.images = health["images"] if health else 0
        if health is None:
            self.report.setText(f"<span style='color:{ERROR}'>The check failed: {error}</span>")
        else:
            self.report.setText(health_html(health) + getattr(self, "last_refused", ""))
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return self.job is None and self.state.images > 0


def health_html(health: dict) -> str:
    buckets = ", ".join(f"{k}: {v}" for k, v in health["bucket_plan"]["buckets"].items())
    lines = [f"<b>{health['images']} images</b> · buckets {buckets or '—'}"]
    for warning in health["warnings"]:
        if warning["kind"] in BLOCKING:
            lines.append(f"<span style='color:{ERROR}'>✗ {warning['message']} {BLOCKING[warning['kind']]}</span>")
        else:
            names = ", ".join(Path(f).name for f in warning["files"][:5])
            more = f" and {len(warning['files']) - 5} more" if len(warning["files"]) > 5 else ""
            lines.append(f"⚠ {warning['message']}" + (f": {names}{more}" if names else ""))
    return "<br>".join(lines)
