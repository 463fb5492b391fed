"""Merge into a checkpoint / combine LoRAs, from the Test page. The work runs in the engine (`serve`'s
bake / combine requests); this dialog only collects where to write and how."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QSpinBox


class MergeDialog(QDialog):
    def __init__(self, mode: str, loras: list[dict], model: str, out_dir: Path, parent=None):
        super().__init__(parent)
        self.mode, self.loras, self.model = mode, loras, model
        bake = mode == "bake"
        self.setWindowTitle("Merge LoRAs into a checkpoint" if bake else "Combine LoRAs into one")
        names = ", ".join(f"{Path(d['path']).stem} × {d['weight']:g}" for d in loras) or "none (add LoRAs first)"
        default = f"{Path(model).stem if bake else 'combined'}-{'-'.join(Path(d['path']).stem for d in loras)[:60]}"
        self.out = QLineEdit(str(Path(out_dir) / f"{default}.safetensors"))
        self.dtype = QComboBox()
        self.dtype.addItems(["fp16", "bf16", "fp32"])
        self.rank = QSpinBox(minimum=0, maximum=1024, value=0)
        self.rank.setSpecialValueText("exact (ranks add up)")
        form = QFormLayout(self)
        form.addRow("LoRAs", QLabel(names))
        if bake:
            form.addRow("Base model", QLabel(model))
            form.addRow("Weights", self.dtype)
        else:
            form.addRow("Rank", self.rank)
        form.addRow("Write to", self.out)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(
            bool(loras) and (bake or len(loras) >= 2))
        form.addRow(buttons)

    def payload(self, job: str) -> dict:
        request = {"cmd": self.mode, "id": job, "loras": self.loras, "out": self.out.text().strip()}
        if self.mode == "bake":
            request.update(model=self.model, dtype=self.dtype.currentText())
        elif self.rank.value():
            request["rank"] = self.rank.value()
        return request
