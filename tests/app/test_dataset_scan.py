"""The training page's step estimate reads image headers on a worker thread, only when the dataset changed,
and an answer to an older request never overwrites a newer one."""

import sys
import threading
import time

from PIL import Image

from app import dataset_scan
from app.dataset_scan import DatasetScanner
from app.training_page import TrainingPage
from trainer.shared import steps as step_count

NO_ENGINE = [sys.executable, "-c", "import sys; sys.exit(1)"]   # model checks and plans fail fast: not tested here


def _images(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / f"{name}.png")
    return folder


def test_headers_are_read_off_the_gui_thread_and_only_when_the_dataset_changed(qtbot, tmp_path, monkeypatch):
    dataset = _images(tmp_path / "dataset", "a", "b")
    readers = []
    real_scan = step_count.scan
    monkeypatch.setattr(step_count, "scan", lambda root: readers.append(threading.current_thread()) or
                        real_scan(root))
    page = TrainingPage(tmp_path / "presets", engine=NO_ENGINE)
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.scanner.settled, timeout=10_000):
        page.open_project(dataset, tmp_path / "config.toml")
    assert "2 images" in page.estimate.text() and "counting" not in page.estimate.text()
    assert readers and threading.main_thread() not in readers
    for _ in range(2):   # shown again and again: the files are as they were, no header is read again
        with qtbot.waitSignal(page.scanner.settled, timeout=10_000):
            page.show()
        page.hide()
    assert len(readers) == 1
    _images(dataset, "c")   # added outside the app
    with qtbot.waitSignal(page.scanner.settled, timeout=10_000):
        page.show()
    assert len(readers) == 2 and "3 images" in page.estimate.text()


def test_an_answer_to_an_older_request_is_dropped(qtbot, tmp_path, monkeypatch):
    old, new = _images(tmp_path / "old", "a"), _images(tmp_path / "new", "a", "b", "c")
    real_fingerprint = dataset_scan.fingerprint

    def slow_for_old(root):
        if root == old:
            time.sleep(0.3)   # still reading the old project when the new one is opened
        return real_fingerprint(root)

    monkeypatch.setattr(dataset_scan, "fingerprint", slow_for_old)
    scanner = DatasetScanner()
    counts = []
    scanner.scanned.connect(lambda images, _problem: counts.append(len(images)))
    with qtbot.waitSignal(scanner.settled, timeout=10_000):
        scanner.scan(old)
        qtbot.wait(50)    # the old scan is running, not merely queued
        scanner.scan(new)
    assert counts == [3] and not scanner.pending
