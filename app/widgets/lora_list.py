"""The Test page's LoRAs: one row per file with its strength slider (UNet) and, under Advanced, a separate
text-encoder strength. Files come from the run (final adapter, checkpoints), a file dialog, or a drop."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

SLIDER_STEPS = 100   # slider units per 1.0 of strength
MAX_STRENGTH = 2.0


class LoraRow(QWidget):
    removed = Signal(object)

    def __init__(self, path: Path, weight: float = 1.0, parent=None):
        super().__init__(parent)
        self.path = Path(path)
        self.enabled = QCheckBox(self.path.stem)
        self.enabled.setChecked(True)
        self.enabled.setToolTip(str(self.path))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(-int(MAX_STRENGTH * SLIDER_STEPS), int(MAX_STRENGTH * SLIDER_STEPS))
        self.value = QLabel()
        self.value.setMinimumWidth(36)
        self.te = QDoubleSpinBox(decimals=2, minimum=-MAX_STRENGTH, maximum=MAX_STRENGTH, singleStep=0.05)
        self.te.setPrefix("TE ")
        self.te.setToolTip("text-encoder strength (A1111's te=); the slider sets the UNet strength")
        self.te.setVisible(False)
        self.same_te = True
        self.slider.valueChanged.connect(self._slid)
        self.te.valueChanged.connect(lambda _v: setattr(self, "same_te", False))
        remove = QPushButton("✕")
        remove.setFixedWidth(28)
        remove.setToolTip("remove this LoRA")
        remove.clicked.connect(lambda: self.removed.emit(self))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for widget, stretch in ((self.enabled, 2), (self.slider, 3), (self.value, 0), (self.te, 0), (remove, 0)):
            row.addWidget(widget, stretch)
        self.set_weight(weight)

    def set_weight(self, weight: float) -> None:
        self.slider.setValue(round(weight * SLIDER_STEPS))

    @property
    def weight(self) -> float:
        return self.slider.value() / SLIDER_STEPS

    def _slid(self, _value: int) -> None:
        self.value.setText(f"{self.weight:.2f}")
        if self.same_te:
            self.te.blockSignals(True)
            self.te.setValue(self.weight)
            self.te.blockSignals(False)

    def to_request(self, weight: float | None = None) -> dict:
        unet = self.weight if weight is None else weight
        te = None if self.same_te else self.te.value()
        return {"path": str(self.path), "weight": unet, "te_weight": te}


class LoraList(QWidget):
    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[LoraRow] = []
        self.box = QVBoxLayout(self)
        self.box.setContentsMargins(0, 0, 0, 0)
        self.empty = QLabel("No LoRA: add the run's adapter or a checkpoint, or drop a .safetensors here.")
        self.empty.setWordWrap(True)
        self.box.addWidget(self.empty)
        self.advanced = False

    def add(self, path: Path, weight: float = 1.0) -> LoraRow:
        for row in self.rows:
            if row.path == Path(path):
                return row
        row = LoraRow(path, weight)
        row.te.setVisible(self.advanced)
        row.removed.connect(self.remove)
        self.rows.append(row)
        self.box.addWidget(row)
        self.empty.setVisible(False)
        self.changed.emit()
        return row

    def remove(self, row: LoraRow) -> None:
        self.rows.remove(row)
        row.setParent(None)
        row.deleteLater()
        self.empty.setVisible(not self.rows)
        self.changed.emit()

    def clear(self) -> None:
        for row in list(self.rows):
            self.remove(row)

    def set_advanced(self, on: bool) -> None:
        self.advanced = on
        for row in self.rows:
            row.te.setVisible(on)

    def active(self) -> list[LoraRow]:
        return [row for row in self.rows if row.enabled.isChecked()]

    def requests(self) -> list[dict]:
        return [row.to_request() for row in self.active()]
