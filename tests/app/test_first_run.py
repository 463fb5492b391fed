"""First run: the start page offers the wizard, a project and the demo, and states once what this computer
lacks (no CUDA here) as facts with their cost, not as errors."""

from PySide6.QtWidgets import QPushButton

from app import settings
from app.main_window import MainWindow
from app.system_probe import SystemProbe
from app.widgets.system_facts import SEEN_KEY


def test_start_page_offers_the_three_ways_in(qtbot, tmp_path):
    window = MainWindow(data_dir=tmp_path)
    qtbot.addWidget(window)
    buttons = [b.text() for b in window.tabs.widget(0).findChildren(QPushButton)]
    assert any(t.startswith("New LoRA") for t in buttons)
    assert {"Open project…", "Try the demo"} <= set(buttons)


NO_GPU = {"torch": "2.5.0+cpu", "cuda": False, "cuda_version": None, "gpus": [], "optional": [
    {"name": "CUDA GPU", "present": False, "cost": "training runs on the CPU: fine for the demo"},
    {"name": "xformers", "present": False, "cost": "none that matters: PyTorch's SDPA attention is used"},
    {"name": "bitsandbytes", "present": True, "cost": ""}]}


def test_missing_pieces_are_facts_shown_once(qtbot, tmp_path):
    probe = SystemProbe()   # the facts are injected: the test passes on a machine with a GPU too
    settings.put(SEEN_KEY, False)
    window = MainWindow(data_dir=tmp_path, probe=probe)
    qtbot.addWidget(window)
    assert "Looking at this computer" in window.facts.text.text()
    probe.inject(NO_GPU)    # the answer comes after the window is built (the probe starts once it shows)
    window.show()
    facts = window.facts
    text = facts.text.text()
    assert "No CUDA GPU:" in text and "runs on the CPU" in text
    assert "No xformers:" in text and "SDPA" in text and "error" not in text.lower()
    facts.dismiss.click()
    assert not facts.isVisible() and settings.flag(SEEN_KEY)
    again = MainWindow(data_dir=tmp_path, probe=probe)
    qtbot.addWidget(again)
    again.show()
    assert not again.facts.isVisible()


def test_a_project_open_in_another_window_is_refused_with_who_holds_it(qtbot, tmp_path):
    import subprocess
    import sys

    from app.project import Project

    folder = tmp_path / "shared-project"
    Project.create(folder)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from PySide6.QtCore import QLockFile\n"
        f"lock = QLockFile({str(folder / '.lora-studio.lock')!r}); assert lock.tryLock(1000)\n"
        "print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        window = MainWindow(data_dir=tmp_path / "app")
        qtbot.addWidget(window)
        window.open_project(folder)
        assert window.project is None
        text = window.message.text()
        assert "already open in another LoRA Studio window" in text and f"process {holder.pid}" in text
    finally:
        holder.kill()
        holder.wait()
    window.open_project(folder)   # the holder died: its lock is stale and is taken over
    assert window.project is not None and window.project.folder == folder


def test_an_unexpected_gui_error_becomes_a_plain_message_with_the_details_logged(qtbot, tmp_path, monkeypatch):
    from app import crash_handler

    monkeypatch.setattr(crash_handler, "log_path", lambda: tmp_path / "gui-errors.log")
    try:
        raise KeyError("bucket_plan")
    except KeyError:
        import sys

        box = crash_handler.report(*sys.exc_info())
    assert "unexpected problem: KeyError" in box.text() and "Your projects" in box.text()
    assert "Traceback" in box.detailedText() and "Traceback" not in box.text()
    assert "KeyError: 'bucket_plan'" in (tmp_path / "gui-errors.log").read_text(encoding="utf-8")
