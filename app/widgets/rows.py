"""A row of widgets without margins: text fields and spacers take the spare width, buttons keep theirs."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLineEdit, QWidget


def row(*widgets: QWidget) -> QWidget:
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget, 1 if type(widget) in (QLineEdit, QComboBox, QWidget) else 0)
    return box
