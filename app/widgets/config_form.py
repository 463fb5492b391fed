"""Editors for TrainConfig keys, built from the config's own field types, ranges and choices.

One editor per dotted key; the allowed range and help text come from trainer.config, so the form can
never drift from what the engine accepts.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import get_type_hints

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox, QWidget

from trainer import config as config_mod

SCIENTIFIC = {"optimizer.lr", "optimizer.text_encoder_lr", "optimizer.eps", "optimizer.weight_decay"}


def field_info(dotted: str) -> tuple[type, dict]:
    section, key = dotted.split(".")
    cls = config_mod.SECTIONS[section]
    meta = next(f.metadata for f in fields(cls) if f.name == key)
    return get_type_hints(cls)[key], dict(meta)


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in config_mod.SECTIONS.items() for f in fields(cls)]


class KeyEditor(QWidget):
    """Wraps the right Qt editor for one key; `value()` returns the key's Python value."""

    changed = Signal()

    def __init__(self, dotted: str, parent=None):
        super().__init__(parent)
        from PySide6.QtWidgets import QHBoxLayout

        self.dotted = dotted
        self.kind, self.meta = field_info(dotted)
        self.editor = self._make()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.editor)
        self.setToolTip(self.meta.get("help", ""))

    def _make(self) -> QWidget:
        lo, hi, choices = self.meta.get("min"), self.meta.get("max"), self.meta.get("choices")
        if choices:
            w = QComboBox()
            w.addItems(list(choices))
            w.currentTextChanged.connect(self.changed)
        elif self.kind is bool:
            w = QCheckBox()
            w.toggled.connect(self.changed)
        elif self.kind is int:
            w = QSpinBox()
            w.setRange(int(lo if lo is not None else -2**31), int(min(hi if hi is not None else 2**31 - 1,
                                                                      2**31 - 1)))
            w.valueChanged.connect(self.changed)
        elif self.kind is float and self.dotted not in SCIENTIFIC:
            w = QDoubleSpinBox()
            w.setDecimals(3)
            w.setRange(lo if lo is not None else -1e9, hi if hi is not None else 1e9)
            w.setSingleStep(0.05)
            w.valueChanged.connect(self.changed)
        else:
            w = QLineEdit()  # strings, lists (as JSON) and learning rates (1e-4 reads better as text)
            w.textChanged.connect(self.changed)
        return w

    def set_value(self, value) -> None:
        w = self.editor
        w.blockSignals(True)
        if isinstance(w, QComboBox):
            w.setCurrentText(str(value))
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
            w.setValue(value)
        elif self.kind is list:
            w.setText(json.dumps(value))
        else:
            w.setText(f"{value:g}" if isinstance(value, float) else str(value))
        w.blockSignals(False)

    def value(self):
        w = self.editor
        if isinstance(w, QComboBox):
            return w.currentText()
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, (QSpinBox, QDoubleSpinBox)):
            return w.value()
        text = w.text().strip()
        if self.kind is list:
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return text  # the config's own check reports it, naming the key
        if self.kind is float:
            try:
                return float(text)
            except ValueError:
                return text
        return text
