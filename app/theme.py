"""Light or dark, as the system is: the window follows the desktop's colour scheme, and changes with it.

Fusion draws every widget from the palette on every platform, so one dark palette reaches all of them
(native styles ignore a palette in places). Widgets use palette roles, never fixed greys; the red of an
error (ERROR) reads on both. LORA_STUDIO_THEME=light|dark overrides the system (screenshots, tests).
"""

from __future__ import annotations

import os

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

ERROR = "#d0302f"
WARNING = "#b86e00"


def dark_palette() -> QPalette:
    p = QPalette()
    roles = QPalette.ColorRole
    for role, color in ((roles.Window, "#2b2d30"), (roles.WindowText, "#e6e6e6"), (roles.Base, "#1f2023"),
                        (roles.AlternateBase, "#2f3134"), (roles.ToolTipBase, "#3a3d41"),
                        (roles.ToolTipText, "#e6e6e6"), (roles.PlaceholderText, "#8c8f94"), (roles.Text, "#e6e6e6"),
                        (roles.Button, "#35373b"), (roles.ButtonText, "#e6e6e6"), (roles.BrightText, "#ff6b6b"),
                        (roles.Light, "#45484d"), (roles.Midlight, "#3c3f43"), (roles.Mid, "#55585d"),
                        (roles.Dark, "#1b1c1e"), (roles.Shadow, "#0d0d0e"), (roles.Highlight, "#3d7bd9"),
                        (roles.HighlightedText, "#ffffff"), (roles.Link, "#6ea8ff"), (roles.LinkVisited, "#b48cff")):
        p.setColor(role, QColor(color))
    for role in (roles.WindowText, roles.Text, roles.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#77797d"))
    return p


def is_dark(app: QApplication) -> bool:
    forced = os.environ.get("LORA_STUDIO_THEME", "")
    if forced in ("dark", "light"):
        return forced == "dark"
    return app.styleHints().colorScheme() == Qt.ColorScheme.Dark


def follow_system(app: QApplication) -> None:
    """Use Fusion with the system's scheme now and whenever the desktop switches."""
    app.setStyle("Fusion")

    def apply() -> None:
        app.setPalette(dark_palette() if is_dark(app) else app.style().standardPalette())
        for widget in app.allWidgets():  # Qt keeps a style-sheeted widget's old palette: re-apply its sheet
            if widget.styleSheet():
                widget.setStyleSheet(widget.styleSheet())

    app.styleHints().colorSchemeChanged.connect(lambda _scheme: apply())
    apply()


def muted_html_color() -> str:
    """A secondary-text colour for rich text (HTML has no palette roles)."""
    app = QApplication.instance()
    return app.palette().color(QPalette.ColorRole.PlaceholderText).name() if app else "#808080"
