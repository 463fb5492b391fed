"""The window behaves like a desktop app: shortcuts, a status bar with the engine's state, arrow keys through
the previews, and the system's light/dark scheme."""

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication, QMessageBox

from app.dialogs.image_viewer import ImageViewer
from app.engine_client import EngineProcess
from app.main_window import MainWindow
from app.system_probe import SystemProbe

FAKE = [sys.executable, str(Path(__file__).with_name("fake_engine.py"))]


def _window(qtbot, tmp_path):
    probe = SystemProbe()
    probe.inject({"gpus": [], "optional": []})   # no `system` child: these tests are about the window
    window = MainWindow(engine=EngineProcess(engine=FAKE), data_dir=tmp_path, probe=probe)
    qtbot.addWidget(window)
    with qtbot.waitActive(window):   # shortcuts reach the active window only
        window.show()
        window.activateWindow()
    return window


def test_ctrl_return_starts_esc_stops_after_asking_and_the_status_bar_follows(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_MODE", "slow")
    window = _window(qtbot, tmp_path)
    assert window.engine_state.text() == "Training engine: idle"
    qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert window.run_page.running and window.tabs.currentWidget() is window.run_page
    qtbot.waitUntil(lambda: "step 1 / 4" in window.engine_state.text(), timeout=20_000)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert window.run_page.running              # "No": the run goes on
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(window.run_page.run_finished, timeout=20_000):
        qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert window.run_page.status.text().startswith("Stopped at step")
    assert window.engine_state.text() == "Training engine: idle"


def test_arrow_keys_walk_the_previews(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_MODE", "ok")
    window = _window(qtbot, tmp_path)
    with qtbot.waitSignal(window.run_page.run_finished, timeout=20_000):
        window.try_demo()
    gallery = window.run_page.gallery
    first = gallery.model_.index(0, 0).data(Qt.ItemDataRole.UserRole + 1)
    viewer = ImageViewer([first], window, step=gallery.neighbour)
    qtbot.addWidget(viewer)
    qtbot.keyClick(viewer, Qt.Key.Key_Right)          # the next step of the same prompt
    assert viewer.paths[0].endswith("step000002_p00.png") and gallery.currentIndex().column() == 1
    qtbot.keyClick(viewer, Qt.Key.Key_Down)           # the other prompt at that step
    assert viewer.paths[0].endswith("step000002_p01.png")
    qtbot.keyClick(viewer, Qt.Key.Key_Down)           # past the edge: stays
    assert viewer.paths[0].endswith("step000002_p01.png")
    opened = []
    gallery.image_activated.disconnect()
    gallery.image_activated.connect(opened.append)
    qtbot.keyClick(gallery, Qt.Key.Key_Left)          # Qt's own arrows in the table, Return opens
    qtbot.keyClick(gallery, Qt.Key.Key_Return)
    assert opened and opened[0].endswith("step000000_p01.png")


def test_the_window_follows_a_dark_system_scheme(qtbot, monkeypatch):
    from app import theme
    from app.widgets.tag_chips import TagChips

    app = QApplication.instance()
    before = app.palette()
    chips = TagChips()   # a widget with a style sheet: Qt would keep its first palette
    qtbot.addWidget(chips)
    chips.show()
    base = lambda: chips.chips.palette().color(QPalette.ColorRole.Base).lightness()  # noqa: E731
    try:
        monkeypatch.setenv("LORA_STUDIO_THEME", "dark")
        theme.follow_system(app)
        assert app.palette().color(QPalette.ColorRole.Window).lightness() < 80 and base() < 80
        monkeypatch.setenv("LORA_STUDIO_THEME", "light")
        theme.follow_system(app)
        assert app.palette().color(QPalette.ColorRole.Window).lightness() > 170 and base() > 170
    finally:
        app.setPalette(before)
