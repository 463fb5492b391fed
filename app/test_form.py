"""The Test page's generation settings: prompt, negative prompt, seed, steps, CFG, size, sampler, count."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QWidget,
)

from trainer.shared.generate_params import SAMPLER_LABELS


class SettingsForm(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.prompt = QPlainTextEdit("a photo of tok")
        self.prompt.setMaximumHeight(64)
        self.negative = QLineEdit()
        self.seed = QSpinBox(minimum=-1, maximum=2**31 - 1, value=1234)
        self.seed.setSpecialValueText("random")
        # 0 = the model's own steps, CFG and size (FLUX.1 dev: 20 steps at guidance 3.5; schnell: 4, none; ...)
        self.steps = QSpinBox(minimum=0, maximum=150, value=0)
        self.cfg = QDoubleSpinBox(minimum=0.0, maximum=30.0, value=0.0, singleStep=0.5, decimals=1)
        self.width_ = QSpinBox(minimum=0, maximum=2048, value=0, singleStep=64)
        self.height_ = QSpinBox(minimum=0, maximum=2048, value=0, singleStep=64)
        for box in (self.steps, self.cfg, self.width_, self.height_):
            box.setSpecialValueText("model's")
        self.sampler = QComboBox()
        for key, label in SAMPLER_LABELS.items():
            self.sampler.addItem(label, key)
        self.count = QSpinBox(minimum=1, maximum=16, value=1)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative)
        row = QHBoxLayout()
        for label, widget in (("Seed", self.seed), ("Steps", self.steps), ("CFG", self.cfg)):
            row.addWidget(widget)
            widget.setToolTip(label)
        form.addRow("Seed · steps · CFG", row)
        size = QHBoxLayout()
        for widget in (self.width_, self.height_, self.sampler, self.count):
            size.addWidget(widget)
        self.count.setPrefix("× ")
        form.addRow("Size · sampler · images", size)

    def values(self) -> dict:
        """The request fields (trainer.shared.generate_params.Request); 0 steps, CFG, width or height: the
        model's own (None in the request: the engine asks the model's family)."""
        return {"prompt": self.prompt.toPlainText().strip(), "negative": self.negative.text().strip(),
                "seed": self.seed.value(), "steps": self.steps.value() or None, "cfg": self.cfg.value() or None,
                "sampler": self.sampler.currentData(), "width": self.width_.value() or None,
                "height": self.height_.value() or None, "count": self.count.value()}
