"""The dataset page: drop files onto the window, see them imported, edit and undo a caption, health report."""

from pathlib import Path

from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from app import settings
from app.main_window import MainWindow


def _drop(window, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, drop)


def _sources(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (300, 300), (i * 80, 100, 50)).save(src / f"pic{i}.png")
    (src / "pic0.txt").write_text("zkx, red")
    (src / "broken.png").write_text("not an image")
    return src


def test_drop_import_edit_undo_and_health(qtbot, tmp_path):
    window = MainWindow(data_dir=tmp_path / "app")
    qtbot.addWidget(window)
    window.open_project(tmp_path / "proj", create=True)
    page = window.dataset_page
    src = _sources(tmp_path)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    with qtbot.waitSignal(page.import_finished, timeout=60_000) as done:
        _drop(window, [src])
    report = done.args[0]
    assert report["imported"] == 3 and report["refused"] == 1
    assert any("not an image" in f["reason"] for f in report["files"] if f["status"] == "refused")
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    assert page.grid.model_.rowCount() == 3

    first = page.grid.model_.index(0, 0)
    page.grid.setCurrentIndex(first)
    assert page.editor.caption.toPlainText() == "zkx, red"
    page.editor.caption.selectAll()
    qtbot.keyClicks(page.editor.caption, "zkx, blue")
    page.save_caption()
    caption_file = Path(first.data(Qt.ItemDataRole.UserRole + 1)).with_suffix(".txt")
    assert caption_file.read_text(encoding="utf-8") == "zkx, blue\n"
    page.editor.caption.undo()
    page.save_caption()
    assert caption_file.read_text(encoding="utf-8") == "zkx, red\n"

    with qtbot.waitSignal(page.check_finished, timeout=60_000) as checked:
        page.run_check()
    assert checked.args[0]["images"] == 3
    missing = next(page.health.item(i) for i in range(page.health.count())
                   if page.health.item(i).data(Qt.ItemDataRole.UserRole))
    page.health.itemClicked.emit(missing)
    assert Path(page.grid.currentIndex().data(Qt.ItemDataRole.UserRole + 1)).name in missing.text()


def test_cancelled_import_keeps_what_was_copied(qtbot, tmp_path):
    window = MainWindow(data_dir=tmp_path / "app")
    qtbot.addWidget(window)
    window.open_project(tmp_path / "proj", create=True)
    page = window.dataset_page
    src = _sources(tmp_path)
    with qtbot.waitSignal(page.import_finished, timeout=60_000) as done:
        page.import_paths([src])
        page.job.cancel()
    assert done.args[0] is None
    leftovers = [p for p in (tmp_path / "proj" / "dataset").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


def test_reopening_a_project_restores_its_dataset(qtbot, tmp_path):
    first = MainWindow(data_dir=tmp_path / "app")
    qtbot.addWidget(first)
    first.open_project(tmp_path / "proj", create=True)
    Image.new("RGB", (300, 300)).save(tmp_path / "proj" / "dataset" / "x.png")
    with qtbot.waitSignal(first.closed, timeout=10_000):   # once its thumbnails are made: then the project is free
        first.close()   # releases the project: one window per project
    second = MainWindow(data_dir=tmp_path / "app")
    qtbot.addWidget(second)
    second.open_project(tmp_path / "proj")
    assert second.dataset_page.grid.model_.rowCount() == 1
    assert settings.recent(settings.RECENT_PROJECTS)[0] == str(tmp_path / "proj")


def _project_with_images(qtbot, tmp_path):
    window = MainWindow(data_dir=tmp_path / "app")
    qtbot.addWidget(window)
    window.open_project(tmp_path / "proj", create=True)
    dataset = tmp_path / "proj" / "dataset"
    for i in range(3):
        Image.new("RGB", (300, 300), (i * 80, 10, 10)).save(dataset / f"p{i}.png")
        (dataset / f"p{i}.txt").write_text("red, smile")
    window.dataset_page.reload()
    return window.dataset_page, dataset


def test_bulk_operations_on_the_selection_or_everything(qtbot, tmp_path):
    page, dataset = _project_with_images(qtbot, tmp_path)
    assert page.bulk.completer.model().stringList()[:2] == ["red", "smile"]
    page.grid.selectionModel().select(page.grid.model_.index(0, 0), page.grid.selectionModel().SelectionFlag.Select)
    page.bulk.op.setCurrentIndex(0)  # set trigger word
    page.bulk.value.setText("zkx")
    with qtbot.waitSignal(page.bulk_finished, timeout=60_000):
        page.bulk.apply()
    assert (dataset / "p0.txt").read_text().strip() == "zkx, red, smile"
    assert (dataset / "p1.txt").read_text().strip() == "red, smile"
    page.bulk.op.setCurrentIndex(3)  # replace tag, whole dataset
    page.bulk.value.setText("red")
    page.bulk.other.setText("crimson")
    page.bulk.scope.setCurrentIndex(1)
    with qtbot.waitSignal(page.bulk_finished, timeout=60_000):
        page.bulk.apply()
    assert [(dataset / f"p{i}.txt").read_text().strip() for i in range(3)] == [
        "zkx, crimson, smile", "crimson, smile", "crimson, smile"]
    assert "3 captions changed" in page.bulk.state.text()


def test_exclude_moves_images_aside_and_token_counter_counts_chunks(qtbot, tmp_path):
    page, dataset = _project_with_images(qtbot, tmp_path)
    page.grid.selectionModel().select(page.grid.model_.index(1, 0), page.grid.selectionModel().SelectionFlag.Select)
    page.exclude_selected()
    assert page.grid.model_.rowCount() == 2
    assert (dataset / ".excluded" / "p1.png").exists() and (dataset / ".excluded" / "p1.txt").exists()
    page.grid.setCurrentIndex(page.grid.model_.index(0, 0))
    # chunks are the model family's fact: wait for the engine's answer about the base model
    qtbot.waitUntil(lambda: page.editor.family is not None, timeout=60_000)
    page.editor.caption.setPlainText(", ".join(f"tag{i}" for i in range(40)))   # > 75 tokens: 2 chunks, all read
    assert "tokens · 2 chunks" in page.editor.tokens.text() and "cut" not in page.editor.tokens.text()
    page.editor.caption.setPlainText(", ".join(f"tag{i}" for i in range(100)))  # > 225: the engine cuts it
    assert "tokens · 3 chunks" in page.editor.tokens.text() and "the rest is cut" in page.editor.tokens.text()


def test_tag_chips_remove_and_add_tags_with_undo(qtbot, tmp_path):
    page, dataset = _project_with_images(qtbot, tmp_path)
    page.grid.setCurrentIndex(page.grid.model_.index(0, 0))
    assert [page.editor.chips.chips.item(i).data(Qt.ItemDataRole.UserRole) for i in range(page.editor.chips.chips.count())] \
        == ["red", "smile"]
    page.editor.chips._remove(page.editor.chips.chips.item(0))
    assert (dataset / "p0.txt").read_text() == "smile\n"
    page.editor.chips.adder.setText("zkx")
    page.editor.chips._add()
    assert (dataset / "p0.txt").read_text() == "smile, zkx\n"
    page.editor.caption.undo()
    page.editor.caption.undo()
    page.save_caption()
    assert (dataset / "p0.txt").read_text() == "red, smile\n"
    assert "red" in page.editor.chips.completer.model().stringList()


def test_the_last_project_reopens_at_start(qtbot, tmp_path):
    first = MainWindow(data_dir=tmp_path / "app")
    qtbot.addWidget(first)
    first.open_project(tmp_path / "proj", create=True)
    with qtbot.waitSignal(first.closed, timeout=10_000):
        first.close()
    second = MainWindow(data_dir=tmp_path / "app")
    qtbot.addWidget(second)
    second.restore_last_project()
    assert second.project is not None and second.project.folder == tmp_path / "proj"


def test_import_report_names_the_copy_kept_for_each_duplicate(qtbot, tmp_path):
    from PySide6.QtWidgets import QMessageBox

    window = MainWindow(data_dir=tmp_path / "app")
    qtbot.addWidget(window)
    page = window.dataset_page
    reason = "same content as img00 copy.png, which was kept; this file's caption was copied to img00 copy.txt"
    page._show_report({"imported": 1, "duplicates": 1, "refused": 0, "files": [
        {"source": "/src/img00 copy.png", "status": "imported", "reason": "", "dest": "img00 copy.png"},
        {"source": "/src/img00.png", "status": "duplicate", "reason": reason, "dest": "img00 copy.png"}]})
    box = page.findChildren(QMessageBox)[-1]
    assert "1 already there" in box.text() and f"/src/img00.png: {reason}" in box.detailedText()
