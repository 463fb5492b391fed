"""Editors for TrainConfig keys, built from the config's own field types, ranges and choices.

One editor per dotted key; the allowed range and help text come from trainer.shared.config, so the form can
never drift from what the engine accepts.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import get_type_hints

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from trainer.shared import config as config_mod

# floats typed as text: learning rates (1e-4 reads better than 0.000) and decays (0.9999 needs 4+ decimals)
SCIENTIFIC = {"optimizer.lr", "optimizer.text_encoder_lr", "optimizer.eps", "optimizer.weight_decay",
              "lora.ema_decay"}
# path keys get a Browse… button with this filter
FILES = {"lora.init_from": "LoRA (*.safetensors)", "model.vae": "VAE / autoencoder (*.safetensors *.sft)",
         "model.clip_l": "CLIP-L text encoder (*.safetensors)", "model.t5": "T5-XXL text encoder (*.safetensors)",
         "model.training_adapter": "Training adapter LoRA (*.safetensors)"}
LIST_HINT = "down, mid, up (e.g. 8, 16, 32); empty = one value for every block"


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
        self.dotted = dotted
        self.kind, self.meta = field_info(dotted)
        self.editor = self._make()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.editor)
        if dotted in FILES:
            browse = QPushButton("Browse…")
            browse.clicked.connect(self.browse)
            layout.addWidget(browse)
        self.setToolTip(self.meta.get("help", ""))

    def browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, self.dotted, self.editor.text(), FILES[self.dotted])
        if path:
            self.editor.setText(path)

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
            # a family's limits (caption tokens in whole chunks) come from the engine once the model is known
            # (TrainingPage._follow_family)
            w.valueChanged.connect(self.changed)
        elif self.kind is float and self.dotted not in SCIENTIFIC:
            w = QDoubleSpinBox()
            w.setDecimals(3)
            w.setRange(lo if lo is not None else -1e9, hi if hi is not None else 1e9)
            w.setSingleStep(0.05)
            w.valueChanged.connect(self.changed)
        else:
            w = QLineEdit()  # strings, lists (as JSON) and SCIENTIFIC floats
            if self.kind is list:
                w.setPlaceholderText(LIST_HINT)
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
            w.setText(json.dumps(value) if value else "")  # empty shows the placeholder: what leaving it means
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
            return _parse_list(text)
        if self.kind is float:
            try:
                return float(text)
            except ValueError:
                return text
        return text


def _parse_list(text: str):
    """A list typed as JSON ("[8, 16, 32]"), bare ("8, 16, 32") or not at all ("" = []). Anything else comes back
    as the text: the config's own check reports it, naming the key."""
    try:
        return json.loads(text if text.startswith("[") else f"[{text}]")
    except json.JSONDecodeError:
        return text
