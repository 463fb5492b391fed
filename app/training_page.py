"""The training page: base model, preset, the settings that matter most, and every other key under
Advanced. Values are checked by trainer.shared.config itself, so the messages are the engine's own."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import tomli_w
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QInputDialog,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app import settings
from app.closing import Job, pool_job
from app.dataset_scan import DatasetScanner
from app.engine_client import EngineCall
from app.engine_events import with_hint
from app.model_check import ModelCheck, describe
from app.theme import ERROR, WARNING
from app.widgets.config_form import KeyEditor, all_keys, field_info
from app.widgets.prompt_table import PromptTable
from app.widgets.rows import row
from trainer.shared import config as config_mod
from trainer.shared import steps as step_count
from trainer.shared.config_rules import check_block_lists, inactive_keys
from trainer.shared.fsutil import atomic_write_text

MAIN_KEYS = ["lora.rank", "lora.alpha", "optimizer.lr", "optimizer.text_encoder_lr", "dataset.resolution",
             "schedule.batch_size", "schedule.epochs", "schedule.max_steps", "optimizer.name",
             "schedule.lr_scheduler", "performance.weight_dtype", "performance.gradient_checkpointing"]
HIDDEN = {"model.path", "dataset.path", "lora.targets", "lora.train_text_encoder", "sampling.prompts"}


FILES_KEYS = ("model.vae", "model.clip_l", "model.t5")   # a family's other files, named by config key
ADAPTER_KEY = "model.training_adapter"   # shown beside the base model when the engine says it is distilled


class TrainingPage(QWidget):
    saved = Signal(Path)
    model_checked = Signal(dict)

    def __init__(self, presets_dir: Path, parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.engine = engine
        self.user_presets = Path(presets_dir)
        self.model_check = ModelCheck(self, engine)
        self.model_check.checked.connect(self._model_checked)
        self.dataset: Path | None = None
        self.scanned: list = []      # the dataset's images with sizes and subsets (trainer.shared.steps.scan)
        self.scan_problem = ""
        self.scanner = DatasetScanner(self)   # reads image headers on a worker thread, not this one
        self.scanner.scanned.connect(self._scanned)
        self.scanner.settled.connect(self._show_estimate)
        self.target: Path | None = None
        self.editors = {key: KeyEditor(key) for key in all_keys() if key not in HIDDEN}
        for editor in self.editors.values():
            editor.changed.connect(self.revalidate)
        self.loaded_model = ""
        self.loaded_resolution = 0
        self.family: dict | None = None  # the base model's family facts, from the engine's model check
        self.resolution_chosen = False   # typed by the user (or loaded as an unusual value): a base never moves it
        self.editors["dataset.resolution"].changed.connect(lambda: setattr(self, "resolution_chosen", True))
        for key in (*FILES_KEYS, ADAPTER_KEY):  # naming a missing file answers the model check's question
            self.editors[key].changed.connect(self._show_missing_files)
        self._build()
        self.load(config_mod.TrainConfig())

    def _build(self) -> None:
        self.model = QComboBox(editable=True)
        self.model.addItems(settings.recent(settings.RECENT_MODELS))
        self.model.currentTextChanged.connect(self.check_model)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_model)
        self.arch = QLabel("")
        self.arch.setWordWrap(True)
        self.preset = QComboBox()
        self._fill_presets()
        self.preset.activated.connect(lambda _i: self.apply_preset(self.preset.currentData()))
        save_preset = QPushButton("Save as preset…")
        save_preset.clicked.connect(self.save_preset)
        self.targets = {name: QCheckBox(label) for name, label in (
            ("attention", "Attention"), ("ff", "Feed-forward"), ("conv", "Convolutions"),
            ("te", "Text encoder"))}
        self.targets["attention"].setChecked(True)
        self.targets["attention"].setEnabled(False)  # every target set includes attention
        for box in self.targets.values():
            box.toggled.connect(self.revalidate)
        form = QFormLayout()
        form.addRow("Base model", row(self.model, browse))
        form.addRow("", self.arch)
        form.addRow("Preset", row(self.preset, save_preset))
        form.addRow(_tipped_label("Training adapter", ADAPTER_KEY), self.editors[ADAPTER_KEY])
        form.setRowVisible(self.editors[ADAPTER_KEY], False)  # until the model check says the model is distilled
        form.addRow("Train layers", row(*self.targets.values()))
        for key in MAIN_KEYS:
            form.addRow(_tipped_label(_label(key), key), self.editors[key])
        self.form = form
        self.prompts = PromptTable()   # sampling.prompts as fields, not kohya's `--n --w` syntax
        self.prompts.changed.connect(self.revalidate)
        self.prompts_group = QGroupBox("Preview prompts (drawn during training to watch it learn)")
        QVBoxLayout(self.prompts_group).addWidget(self.prompts)
        self.advanced = self._advanced_group()
        self.problem = QLabel("")
        self.problem.setStyleSheet(f"color: {ERROR};")
        self.problem.setWordWrap(True)
        self.estimate = QLabel("")
        self.memory = QLabel("")  # `lora-studio plan`'s prediction for the settings as they stand
        self.memory.setWordWrap(True)
        self.plan_timer = QTimer(self, singleShot=True, interval=700)  # ask once the user pauses typing
        self.plan_timer.timeout.connect(self._ask_plan)
        self.save_button = QPushButton("Save settings")
        self.save_button.clicked.connect(self.save)
        body = QWidget()
        body.setMaximumWidth(820)
        column = QVBoxLayout(body)
        column.addLayout(form)
        column.addWidget(self.prompts_group)
        column.addWidget(self.advanced)
        column.addWidget(self.estimate)
        column.addWidget(self.memory)
        column.addWidget(self.problem)
        column.addWidget(self.save_button)
        column.addStretch(1)
        scroll = QScrollArea(widgetResizable=True)
        scroll.setWidget(body)
        QVBoxLayout(self).addWidget(scroll)

    def open_project(self, dataset: Path, config: Path) -> None:
        """The project's dataset (for the step estimate) and config.toml (loaded when it exists, saved to)."""
        self.dataset, self.target = Path(dataset), Path(config)
        self.scanned, self.scan_problem = [], ""   # the last project's counts are not this one's
        self.rescan(force=True)
        if self.target.exists():
            self.load(config_mod.load(self.target))
        self.revalidate()

    def dataset_changed(self) -> None:
        """Images were added or set aside on the dataset page: count them again."""
        self.rescan(force=True)
        self.revalidate()

    def _advanced_group(self) -> QGroupBox:
        """Every other key, by its dotted name (the config file's own), each with the config's help."""
        group = QGroupBox("Advanced")
        group.setCheckable(True)
        group.setChecked(False)
        advanced_form = QFormLayout(group)
        for key, editor in self.editors.items():
            if key not in MAIN_KEYS and key != ADAPTER_KEY:
                advanced_form.addRow(_tipped_label(key, key), editor)
        group.toggled.connect(lambda on: [advanced_form.itemAt(i).widget().setVisible(on)
                                          for i in range(advanced_form.count()) if advanced_form.itemAt(i).widget()])
        group.toggled.emit(False)
        return group

    def showEvent(self, event) -> None:
        self.rescan()      # files may have changed outside the app: counted again (off this thread) if they did
        self.revalidate()
        super().showEvent(event)

    def closing_jobs(self) -> list[Job]:
        return [pool_job("Counting the dataset's images…", self.scanner.pool)]

    # -- values --------------------------------------------------------------------------------------
    def load(self, cfg: config_mod.TrainConfig) -> None:
        for key, editor in self.editors.items():
            editor.set_value(cfg.get(key))
        self.resolution_chosen = False   # until the engine says whether it is the loaded model's own resolution
        self.loaded_model, self.loaded_resolution = cfg.model.path, cfg.dataset.resolution
        self.targets["ff"].setChecked(cfg.lora.targets in ("attention+ff", "full"))
        self.targets["conv"].setChecked(cfg.lora.targets == "full")
        self.targets["te"].setChecked(cfg.lora.train_text_encoder)
        self.prompts.blockSignals(True)   # one revalidate below, not one per row
        self.prompts.set_prompts(cfg.sampling.prompts)
        self.prompts.blockSignals(False)
        if cfg.model.path and not cfg.model.path.startswith("demo:"):
            self.model.setCurrentText(cfg.model.path)
        else:
            self.check_model(self.model.currentText())
        self.revalidate()

    def current_config(self) -> config_mod.TrainConfig:
        """The settings as a validated TrainConfig; raises config.ConfigError naming the key."""
        cfg = config_mod.TrainConfig()
        for key, editor in self.editors.items():
            config_mod.set_key(cfg, key, editor.value())
        cfg.lora.targets = ("full" if self.targets["conv"].isChecked() else
                            "attention+ff" if self.targets["ff"].isChecked() else "attention")
        cfg.lora.train_text_encoder = self.targets["te"].isChecked()
        cfg.sampling.prompts = self.prompts.prompts()
        cfg.model.path = self.model.currentText().strip() or "demo:sd15"
        cfg.dataset.path = str(self.dataset or "")
        config_mod.validate(cfg)
        if self.family:  # the model's own block groups (the engine's fact): UNets down/mid/up, FLUX double/single
            check_block_lists(cfg, self.family["block_groups"])
        return cfg

    def revalidate(self) -> bool:
        try:
            cfg = self.current_config()
        except config_mod.ConfigError as exc:
            self.problem.setText(with_hint(exc.message, exc.hint))
            self.save_button.setEnabled(False)
            return False
        self.problem.setText("")
        self.save_button.setEnabled(self.target is not None)
        self._grey_inactive(cfg)
        self.estimate.setText(self._estimate(cfg))
        if self.isVisible():
            self.plan_timer.start()
        return True

    def _grey_inactive(self, cfg: config_mod.TrainConfig) -> None:
        """Keys that change nothing with the other settings (lokr_factor without LoKr, …) are greyed out,
        saying what they wait for; one that holds a value of its own stays editable, so it can be undone."""
        inactive, defaults = inactive_keys(cfg), config_mod.TrainConfig()
        for key, editor in self.editors.items():
            section, name = key.split(".")
            idle = key in inactive and editor.value() == getattr(getattr(defaults, section), name)
            editor.setEnabled(not idle)
            editor.setToolTip(inactive[key] if idle else "")

    def _ask_plan(self) -> None:
        """Predicted GPU memory and RAM from the engine, with a warning when this computer lacks it."""
        try:
            cfg = self.current_config()
        except config_mod.ConfigError:
            return
        plan_file = Path(tempfile.gettempdir()) / f"lora-studio-plan-{os.getpid()}.toml"
        config_mod.save(cfg, plan_file)
        self.plan_call = EngineCall(["plan", str(plan_file), "--json"], self, self.engine)
        self.plan_call.done.connect(self._planned)

    def _planned(self, answer: dict | None, error: str) -> None:
        if answer is None:
            self.memory.setText(f"Memory: could not predict ({error})")
            self.memory.setStyleSheet(f"color: {ERROR};")
            return
        warnings = "".join(f"\n⚠ {w}" for w in answer["warnings"])
        self.memory.setText(f"Memory: {answer['summary']} (frozen weights {answer['weight_dtype']})" + warnings)
        self.memory.setStyleSheet(f"color: {ERROR};" if warnings else "")

    def rescan(self, force: bool = False) -> None:
        """Read the dataset's images again (sizes, subsets, repeats) on a worker thread: after an import, an
        exclude, a new dataset.toml; without FORCE only if its files changed. Settings edits reuse the scan,
        so typing never re-reads image files."""
        if self.dataset is not None:
            self.scanner.scan(self.dataset, force)

    def _scanned(self, images: list, problem: str) -> None:
        self.scanned, self.scan_problem = images, problem

    def _show_estimate(self) -> None:
        try:
            self.estimate.setText(self._estimate(self.current_config()))
        except config_mod.ConfigError:
            pass   # the problem line says what to fix; the estimate waits for a valid config

    def _estimate(self, cfg: config_mod.TrainConfig) -> str:
        """The step count `train` will report: the engine's own rule (trainer.shared.steps)."""
        counting = " · counting the images…" if self.scanner.pending else ""
        if self.scan_problem:
            return f"Steps: cannot count ({self.scan_problem}){counting}"
        per_epoch, total = step_count.steps_for(cfg, self.scanned) if self.scanned else (0, 0)
        images = f"{len(self.scanned)} images"
        if cfg.schedule.epochs and per_epoch:
            return f"≈ {total} steps: {cfg.schedule.epochs} epochs of {per_epoch} steps ({images}){counting}"
        epochs = f" ≈ {cfg.schedule.max_steps / per_epoch:.1f} epochs of {images}" if per_epoch else ""
        return f"{cfg.schedule.max_steps} steps{epochs}{counting}"

    def save(self) -> None:
        if self.target is not None and self.revalidate():
            config_mod.save(self.current_config(), self.target)
            self.saved.emit(self.target)

    # -- presets -------------------------------------------------------------------------------------
    def _fill_presets(self) -> None:
        self.preset.clear()
        self.preset.addItem("(choose a preset)", None)
        for path in sorted(config_mod.PRESETS_DIR.glob("*.toml")) + sorted(self.user_presets.glob("*.toml")):
            self.preset.addItem(path.stem, str(path))

    def apply_preset(self, path: str | None) -> None:
        if path:
            model = self.model.currentText()
            self.load(config_mod.load(Path(path)))
            if model:
                self.model.setCurrentText(model)  # a preset never changes which model the user picked

    def save_preset(self) -> None:
        name, ok = QInputDialog.getText(self, "Save as preset", "Preset name:")
        if ok and name.strip() and self.revalidate():
            self.user_presets.mkdir(parents=True, exist_ok=True)
            path = self.user_presets / f"{name.strip()}.toml"
            atomic_write_text(path, tomli_w.dumps(sparse(self.current_config())))
            self._fill_presets()
            self.preset.setCurrentIndex(self.preset.findData(str(path)))

    # -- base model ----------------------------------------------------------------------------------
    def _follow_base_resolution(self, info: dict) -> None:
        """Train at the base's own resolution (the engine's fact: SDXL 1024, SD 2-v 768) unless the user chose
        one; the demo's tiny model keeps its 64 px."""
        editor = self.editors["dataset.resolution"]
        if info.get("format") == "demo":
            return
        if not self.resolution_chosen and self.model.currentText().strip() != self.loaded_model:
            editor.set_value(info["family"]["native_resolution"])
            self.revalidate()

    def _show_missing_files(self) -> None:
        """A model whose other files (FLUX.1's AE, CLIP-L, T5) were not found beside it: name each, unless
        its config key (Advanced: model.vae, model.clip_l, model.t5) now names one."""
        info = getattr(self, "model_info", None)
        if not info or info.get("format") == "demo":
            return
        missing = [m for m in info.get("missing_files", [])
                   if not any(f"({key};" in m and self.editors[key].value() for key in FILES_KEYS)]
        text = describe(info) + (" — also needs: " + "; ".join(missing) + ". Put them beside the model, or name "
                                 "them under Advanced." if missing else "")
        undistill = info["family"].get("distilled") and not self.editors[ADAPTER_KEY].value()
        if undistill:  # trained as it is, a LoRA undoes the distillation (the engine refuses or warns)
            text += (" — a step-distilled model: give a training adapter below (a LoRA that un-distills it while "
                     "training, e.g. ostris' adapters for ai-toolkit), or train on its undistilled model.")
        self.arch.setText(text)
        self.arch.setStyleSheet(f"color: {WARNING};" if missing or undistill else "")

    def _follow_family(self, family: dict) -> None:
        """Settings whose steps and limits are the family's: caption tokens move by whole chunks up to the
        most its text encoder reads."""
        tokens = self.editors["dataset.max_token_length"].editor
        tokens.setSingleStep(family["token_chunk"])
        tokens.setMaximum(family["max_tokens"])
        self.targets["conv"].setText(family["full_targets"])  # UNets: convolutions; FLUX: modulation layers
        adapter = self.editors[ADAPTER_KEY]  # offered for distilled models, and kept in sight while it is set
        self.form.setRowVisible(adapter, bool(family.get("distilled") or adapter.value()))
        self.family = family

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Base model", "", "Models (*.safetensors *.ckpt)")
        if path:
            self.model.setCurrentText(path)

    def check_model(self, text: str) -> None:
        path = text.strip() or self.loaded_model  # an empty field trains the config's own model (the demo's)
        if not path:
            self.model_check.path = ""  # an answer still on its way is for a model no longer chosen
            self.arch.setText("")
            return
        self.model_check.check(path)  # the demo too: the engine says what its family is
        self.arch.setText("checking…")

    def _model_checked(self, path: str, info: dict | None, error: str) -> None:
        if path != (self.model.currentText().strip() or self.loaded_model):
            return  # the user picked another file meanwhile
        if info is None:
            self.arch.setText(error)
            self.arch.setStyleSheet(f"color: {ERROR};")
            self.model_checked.emit({"ok": False, "message": error})
            return
        demo = info.get("format") == "demo"
        self.arch.setText(f"built-in tiny demo model ({info['family']['label']})" if demo else describe(info))
        self.arch.setStyleSheet("")
        self._follow_family(info["family"])
        self.model_info = info
        self._show_missing_files()
        if path == self.loaded_model:  # a saved config at another resolution than its model's: the user's choice
            self.resolution_chosen = self.loaded_resolution != info["family"]["native_resolution"]
        self._follow_base_resolution(info)
        self.model_checked.emit({"ok": True, **info})


def sparse(cfg: config_mod.TrainConfig) -> dict:
    """Only the keys that differ from the defaults: a preset is an overlay."""
    defaults, values = config_mod.TrainConfig().to_dict(), cfg.to_dict()
    out: dict = {"schema_version": config_mod.SCHEMA_VERSION}
    for section, keys in values.items():
        if isinstance(keys, dict):
            diff = {k: v for k, v in keys.items() if v != defaults[section][k] and f"{section}.{k}"
                    not in ("model.path", "dataset.path")}
            if diff:
                out[section] = diff
    return out


def _tipped_label(text: str, key: str) -> QLabel:
    """A form label whose tooltip is the config's own help for KEY (trainer.shared.config metadata)."""
    label = QLabel(text)
    label.setToolTip(f"<b>{key}</b><br>{field_info(key)[1].get('help', '')}")
    return label


def _label(key: str) -> str:
    return {"lora.rank": "Rank", "lora.alpha": "Alpha", "optimizer.lr": "Learning rate",
            "optimizer.text_encoder_lr": "Text-encoder learning rate", "dataset.resolution": "Resolution",
            "schedule.batch_size": "Batch size", "schedule.epochs": "Epochs (0 = use steps)",
            "schedule.max_steps": "Steps", "optimizer.name": "Optimizer",
            "schedule.lr_scheduler": "LR schedule", "performance.weight_dtype": "Base weights precision",
            "performance.gradient_checkpointing": "Gradient checkpointing"}[key]
