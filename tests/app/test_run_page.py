"""The run page against a fake engine (canned events, a crash, an error) and once against the real one."""

import sys
from pathlib import Path

import pytest

from app.engine_client import EngineProcess
from app.main_window import MainWindow
from app.run_page import RunPage

FAKE = [sys.executable, str(Path(__file__).with_name("fake_engine.py"))]


@pytest.fixture
def page(qtbot):
    widget = RunPage(EngineProcess(engine=FAKE))
    qtbot.addWidget(widget)
    return widget


def _run(qtbot, page, run_dir, mode, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_MODE", mode)
    page.prepare(run_dir, demo=True)
    with qtbot.waitSignal(page.run_finished, timeout=20_000) as finished:
        page.start()
    return finished.args[0]


def test_a_full_run_fills_progress_chart_and_gallery(qtbot, page, tmp_path, monkeypatch):
    assert _run(qtbot, page, tmp_path / "run", "ok", monkeypatch) is True
    assert page.progress.value() == 4 and page.progress.maximum() == 4
    assert [s for s, _ in page.chart.points] == [1, 2, 3, 4]
    assert page.chart.validation == [(2, 0.7), (4, 0.9)]  # the second line: validation loss
    assert page.gallery.steps == [0, 2, 4] and page.gallery.prompts == ["a cat", "a dog"]
    assert page.gallery.image_count() == 6
    assert "Finished at step 4" in page.status.text()
    assert "log line at step 3" in page.log.toPlainText()
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()


def test_a_crash_keeps_the_gui_up_and_offers_resume(qtbot, page, tmp_path, monkeypatch):
    assert _run(qtbot, page, tmp_path / "run", "crash", monkeypatch) is False
    text = page.status.text()
    assert "exit code 139" in text and "killed or crashed" in text and "Segmentation fault" in text
    assert page.gallery.image_count() == 4  # what arrived before the crash stays
    assert not page.resume_button.isHidden()


def test_an_error_event_shows_message_and_hint(qtbot, page, tmp_path, monkeypatch):
    assert _run(qtbot, page, tmp_path / "run", "error", monkeypatch) is False
    assert "CUDA out of memory" in page.status.text() and "lower the batch size to 1" in page.status.text()
    assert "Traceback" not in page.status.text()


def test_demo_on_the_real_engine_shows_a_sample(qtbot, tmp_path):
    window = MainWindow(data_dir=tmp_path)
    qtbot.addWidget(window)
    page = window.run_page
    with qtbot.waitSignal(page.run_finished, timeout=180_000) as finished:
        window.try_demo()
    assert finished.args[0] is True
    assert page.gallery.image_count() >= 2 and page.gallery.steps[0] == 0
    adapter = next(window.data_dir.glob("demo-runs/*/demo-lora.safetensors"))
    assert adapter.stat().st_size > 0


def test_past_runs_reopen_in_the_gallery(qtbot, tmp_path, monkeypatch):
    window = MainWindow(engine=EngineProcess(engine=FAKE), data_dir=tmp_path)
    qtbot.addWidget(window)
    _run(qtbot, window.run_page, tmp_path / "old", "ok", monkeypatch)
    window.run_page.gallery.clear()
    window.show_run(tmp_path / "old")
    assert window.run_page.gallery.image_count() == 6
    assert window.run_page.gallery.prompts == ["a cat", "a dog"]


def test_export_from_the_run_page_uses_the_picked_checkpoint_and_sample(qtbot, tmp_path):
    """A real demo run, then Export with a sample selected: the file, card and preview land in A1111."""
    window = MainWindow(data_dir=tmp_path)
    qtbot.addWidget(window)
    page = window.run_page
    with qtbot.waitSignal(page.run_finished, timeout=180_000):
        window.try_demo()
    model = page.gallery.model_
    col = page.gallery.steps.index(40)
    page.gallery.selectionModel().select(model.index(0, col), page.gallery.selectionModel().SelectionFlag.Select)
    dialog = page.export_dialog()
    qtbot.addWidget(dialog)
    assert dialog.adapter.currentText() == "demo-lora-step000040.safetensors"
    webui = tmp_path / "webui"
    webui.mkdir()
    (webui / "webui.py").write_text("")
    dialog.folder.setText(str(webui))
    dialog.name.setText("shapes")
    with qtbot.waitSignal(dialog.exported, timeout=60_000) as done:
        dialog.export()
    assert done.args[0]["ui"] == "a1111"
    lora = webui / "models" / "Lora"
    assert (lora / "shapes.safetensors").exists() and (lora / "shapes.json").exists()
    assert (lora / "shapes.preview.png").read_bytes() == Path(page.gallery.selected_paths()[0]).read_bytes()
    assert "none ignored" in dialog.result.text()


def test_a_finished_project_run_keeps_its_outcome_on_screen_and_a_new_run_is_ready(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_MODE", "ok")
    window = MainWindow(EngineProcess(engine=FAKE), data_dir=tmp_path / "app")
    qtbot.addWidget(window)
    window.open_project(tmp_path / "proj", create=True)
    first = window.run_page.run_dir
    with qtbot.waitSignal(window.run_page.run_finished, timeout=20_000):
        window.run_page.start()
    assert "Finished at step 4" in window.run_page.status.text()
    assert window.run_page.run_dir != first, "the next Start trains into a new run folder"


def test_loss_chart_paints_with_and_without_validation_points(qtbot):
    from app.widgets.loss_chart import LossChart

    chart = LossChart()
    qtbot.addWidget(chart)
    chart.resize(400, 200)
    for step, loss in ((1, 0.3), (2, 0.25), (3, 0.2)):
        chart.add_point(step, loss)
    chart.paintEvent(None)  # a run without validation (the common case) used to raise in here
    chart.add_validation_point(3, 0.22)
    chart.paintEvent(None)
    assert not chart.grab().isNull()
