"""Closing the window while jobs run: it asks them to stop, says what it waits for, and never blocks the
event loop; a job that does not stop in time is ended by force."""

import sys
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QMessageBox

from app.engine_client import EngineProcess
from app.main_window import MainWindow
from app.system_probe import SystemProbe

FAKE = [sys.executable, str(Path(__file__).with_name("fake_engine.py"))]
FAKE_SERVE = [sys.executable, str(Path(__file__).with_name("fake_serve.py"))]


def _window(qtbot, tmp_path, engine: EngineProcess | None = None) -> MainWindow:
    probe = SystemProbe()
    probe.inject({"gpus": [], "optional": []})   # no `system` child: these tests are about closing
    window = MainWindow(engine=engine or EngineProcess(engine=FAKE), data_dir=tmp_path, probe=probe)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def _training(qtbot, window, tmp_path, monkeypatch, mode: str) -> None:
    monkeypatch.setenv("FAKE_ENGINE_MODE", mode)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    window.run_page.prepare(tmp_path / "run", demo=True)
    window.run_page.start()
    qtbot.waitUntil(lambda: window.run_page.progress.value() >= 1, timeout=20_000)


def _heartbeat(window) -> list:
    """Counts the event loop's turns while the window closes: a blocking wait would starve it."""
    beats: list = []
    timer = QTimer(window, interval=20)
    timer.timeout.connect(lambda: beats.append(1))
    timer.start()
    return beats


def test_closing_during_a_run_waits_for_its_checkpoint_with_the_window_responsive(qtbot, tmp_path, monkeypatch):
    window = _window(qtbot, tmp_path)
    _training(qtbot, window, tmp_path, monkeypatch, "slow")
    beats = _heartbeat(window)
    with qtbot.waitSignal(window.closed, timeout=20_000):
        window.close()
        assert window.isVisible() and window.run_page.running   # close() came back at once: waiting, not blocked
        assert not window.centralWidget().isEnabled()           # nothing new starts meanwhile
        qtbot.waitUntil(window.closing.isVisible, timeout=5_000)
        assert window.closing.waiting.text() == "Stopping the training run… (saving its checkpoint)"
        assert "will be ended by force" in window.closing.countdown.text()
        qtbot.keyClick(window.closing, Qt.Key.Key_Return)   # not "Quit now": the run still saves
        qtbot.keyClick(window.closing, Qt.Key.Key_Escape)   # and the dialog stays until it has
        assert window.closing.isVisible() and window.run_page.running
        waited = len(beats)
    assert waited >= 5 and len(beats) > waited                  # the loop turned all along
    assert not window.isVisible() and not window.closing.isVisible() and not window.run_page.running
    assert window.run_page.engine.saw_done and window.run_page.status.text().startswith("Stopped at step")


def test_a_job_that_does_not_stop_is_ended_after_its_grace(qtbot, tmp_path, monkeypatch):
    window = _window(qtbot, tmp_path, EngineProcess(engine=FAKE, stop_grace_ms=500))
    _training(qtbot, window, tmp_path, monkeypatch, "deaf")
    with qtbot.waitSignal(window.closed, timeout=10_000):
        window.close()
        assert window.isVisible()
    assert not window.run_page.running and not window.run_page.engine.saw_done   # killed: no clean end


def test_quit_now_ends_the_jobs_without_waiting(qtbot, tmp_path, monkeypatch):
    window = _window(qtbot, tmp_path)
    _training(qtbot, window, tmp_path, monkeypatch, "deaf")
    window.close()
    qtbot.waitUntil(window.closing.isVisible, timeout=5_000)
    with qtbot.waitSignal(window.closed, timeout=5_000):
        window.closing.quit_now.click()
    assert not window.run_page.running


def test_the_test_engine_ends_before_the_window_closes(qtbot, tmp_path):
    window = _window(qtbot, tmp_path)
    page = window.test_page
    page.engine = EngineProcess(page, engine=FAKE_SERVE)   # the test page's own engine, as a fake
    page.engine.event.connect(page.on_event)
    with qtbot.waitSignal(page.jobs_finished, timeout=20_000):
        page.generate()
    assert page.engine.running   # serve stays up for the next request
    with qtbot.waitSignal(window.closed, timeout=20_000):
        window.close()
    assert not page.engine.running


def test_closing_with_nothing_running_closes_at_once(qtbot, tmp_path):
    window = _window(qtbot, tmp_path)
    with qtbot.waitSignal(window.closed, timeout=1_000):
        assert window.close()
