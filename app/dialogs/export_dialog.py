"""Export an adapter (the final one or a checkpoint) to a UI's folder, from the run page.

The export itself runs in the engine (`python -m trainer export ... --json`) as a child process, like
training: the GUI only shows what it reports.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QWidget,
)

from app import settings
from app.engine_client import EngineCall
from trainer.shared.run_folder import adapters_in, checkpoint_for_step, ema_of, is_ema_file

EMA_LABEL = "{name} · EMA (averaged weights)"


def add_adapter_items(combo: QComboBox, run_dir: Path) -> None:
    """The run's final adapter and checkpoints, each followed by its EMA version when the run kept one
    (lora.ema_decay): an EMA file is a choice of its adapter, never an adapter of its own."""
    for path in adapters_in(run_dir):
        combo.addItem(path.name, str(path))
        if (ema := ema_of(path)) is not None:
            combo.addItem(EMA_LABEL.format(name=path.name), str(ema))


def default_name(adapter: str | None) -> str:
    """The name an export gets: the run's output name, without a checkpoint's step; "-ema" for an EMA file."""
    path = Path(adapter or "lora.safetensors")
    base = path.name.removesuffix(".ema.safetensors").removesuffix(".safetensors").split("-step")[0]
    return f"{base}-ema" if is_ema_file(path) else base


class ExportDialog(QDialog):
    exported = Signal(dict)

    def __init__(self, run_dir: Path, preview: str | None = None, step: int | None = None, parent=None,
                 engine: list[str] | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export LoRA")
        self.engine = engine
        self.call: EngineCall | None = None
        self.overwrite = False
        self.adapter = QComboBox()
        add_adapter_items(self.adapter, run_dir)
        picked = checkpoint_for_step(run_dir, step) if step else None
        if picked is not None:
            self.adapter.setCurrentIndex(self.adapter.findData(str(picked)))
        self.format = QComboBox()
        self.format.addItem("kohya (A1111, Forge, ComfyUI, InvokeAI, diffusers)", "kohya")
        self.format.addItem("diffusers / PEFT folder", "diffusers")
        self.folder = QLineEdit(settings.text(settings.EXPORT_FOLDER))
        self.folder.setPlaceholderText("your A1111/Forge or ComfyUI folder, an InvokeAI root, or any folder")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        folder_row = QWidget()
        folder_row.setLayout(row)
        self.name = QLineEdit(default_name(self.adapter.currentData()))
        self.adapter.currentIndexChanged.connect(self._adapter_changed)
        self.preview = preview
        self.result = QLabel("")
        self.result.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Adapter", self.adapter)
        form.addRow("Format", self.format)
        form.addRow("Put it in", folder_row)
        form.addRow("Name", self.name)
        form.addRow("Preview", QLabel(Path(preview).name if preview else "the run's latest sample"))
        form.addRow(self.result)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Close)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        self.buttons.accepted.connect(self.export)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)

    def _adapter_changed(self) -> None:
        """Follow the choice with the default name (an EMA file gets "-ema"), unless the user typed one."""
        if self.name.text().strip() in {default_name(self.adapter.itemData(i)) for i in range(self.adapter.count())}:
            self.name.setText(default_name(self.adapter.currentData()))

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Where should the LoRA go?", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def command(self) -> list[str]:
        args = ["export", self.adapter.currentData(), "--format", self.format.currentData(), "--json"]
        if self.folder.text().strip():
            args += ["--to", self.folder.text().strip()]
        if self.name.text().strip():
            args += ["--name", self.name.text().strip()]
        if self.preview:
            args += ["--preview", self.preview]
        if self.overwrite:
            args.append("--overwrite")
        return args

    def export(self) -> None:
        if not self.adapter.currentData():
            self.result.setText("This run has no adapter yet: finish or stop it first.")
            return
        settings.put(settings.EXPORT_FOLDER, self.folder.text().strip())
        self.buttons.setEnabled(False)
        self.result.setText("Exporting and verifying…")
        self.call = EngineCall(self.command(), self, self.engine)
        self.call.done.connect(self._finished)

    def _finished(self, data: dict | None, err: str) -> None:
        self.buttons.setEnabled(True)
        if data is not None:
            note = f"\nNext: {data['note']}" if data.get("note") else ""
            self.result.setText(f"Exported for {data['ui']}: {data['adapter']}\n{data['verification']}{note}")
            self.exported.emit(data)
            return
        if "already exists" in err and not self.overwrite and self._confirm_overwrite(err):
            self.overwrite = True
            self.export()
            return
        self.result.setText(err or "export failed")

    def _confirm_overwrite(self, err: str) -> bool:
        first = err.splitlines()[0]
        answer = QMessageBox.question(self, "Replace file?", f"{first}.\nReplace it?")
        return answer == QMessageBox.StandardButton.Yes
