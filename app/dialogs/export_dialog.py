"""Export an adapter (the final one or a checkpoint) to a UI's folder, from the run page.

The export itself runs in the engine (`python -m trainer export ... --json`) as a child process, like
training: the GUI only shows what it reports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import QProcess, QSettings, Signal
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


def adapters_in(run_dir: Path) -> list[Path]:
    """The final adapter first, then checkpoints, newest first."""
    finals = sorted(Path(run_dir).glob("*.safetensors"))
    checkpoints = sorted((Path(run_dir) / "checkpoints").glob("*.safetensors"), reverse=True)
    return finals + checkpoints


def checkpoint_for_step(run_dir: Path, step: int) -> Path | None:
    matches = sorted((Path(run_dir) / "checkpoints").glob(f"*-step{step:06d}.safetensors"))
    return matches[0] if matches else None


class ExportDialog(QDialog):
    exported = Signal(dict)

    def __init__(self, run_dir: Path, preview: str | None = None, step: int | None = None, parent=None,
                 engine: list[str] | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export LoRA")
        self.engine = engine or [sys.executable, "-m", "trainer"]
        self.settings = QSettings("LoRA Studio", "LoRA Studio")
        self.proc: QProcess | None = None
        self.overwrite = False
        self.adapter = QComboBox()
        for path in adapters_in(run_dir):
            self.adapter.addItem(path.name, str(path))
        picked = checkpoint_for_step(run_dir, step) if step else None
        if picked is not None:
            self.adapter.setCurrentIndex(self.adapter.findData(str(picked)))
        self.format = QComboBox()
        self.format.addItem("kohya (A1111, Forge, ComfyUI, InvokeAI, diffusers)", "kohya")
        self.format.addItem("diffusers / PEFT folder", "diffusers")
        self.folder = QLineEdit(str(self.settings.value("export/folder", "")))
        self.folder.setPlaceholderText("your A1111/Forge or ComfyUI folder, an InvokeAI root, or any folder")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        folder_row = QWidget()
        folder_row.setLayout(row)
        self.name = QLineEdit(Path(self.adapter.currentData() or "lora").stem.split("-step")[0])
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
        self.settings.setValue("export/folder", self.folder.text().strip())
        self.buttons.setEnabled(False)
        self.result.setText("Exporting and verifying…")
        self.proc = QProcess(self)
        self.proc.finished.connect(self._finished)
        self.proc.start(self.engine[0], self.engine[1:] + self.command())

    def _finished(self, code: int, _status) -> None:
        self.buttons.setEnabled(True)
        out = bytes(self.proc.readAllStandardOutput()).decode("utf-8", "replace")
        err = bytes(self.proc.readAllStandardError()).decode("utf-8", "replace").strip()
        if code == 0:
            data = json.loads(out)
            note = f"\nNext: {data['note']}" if data.get("note") else ""
            self.result.setText(f"Exported for {data['ui']}: {data['adapter']}\n{data['verification']}{note}")
            self.exported.emit(data)
            return
        if "already exists" in err and not self.overwrite and self._confirm_overwrite(err):
            self.overwrite = True
            self.export()
            return
        self.result.setText(err.removeprefix("error: ") or f"export failed (exit code {code})")

    def _confirm_overwrite(self, err: str) -> bool:
        first = err.splitlines()[0].removeprefix("error: ")
        answer = QMessageBox.question(self, "Replace file?", f"{first}.\nReplace it?")
        return answer == QMessageBox.StandardButton.Yes
