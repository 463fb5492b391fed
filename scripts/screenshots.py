"""Take the GUI screenshots in docs/screenshots/ from a real window (run under Xvfb, see README).

    xvfb-run -s "-screen 0 1280x800x24" .venv/bin/python scripts/screenshots.py
"""

import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QStandardPaths, QTimer
from PySide6.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app import theme  # noqa: E402
from app.main_window import MainWindow  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def main() -> int:
    app = QApplication(sys.argv)
    theme.follow_system(app)  # as `python -m app` looks (LORA_STUDIO_THEME=dark for the dark scheme)
    QStandardPaths.setTestModeEnabled(True)  # never touch the user's settings (recent and last project)
    window = MainWindow(data_dir=Path(tempfile.mkdtemp()))
    window.resize(1200, 780)
    window.show()

    def shoot(name: str) -> None:
        window.grab().save(str(OUT / name))
        print("saved", OUT / name)

    def export_dialog() -> None:
        gallery = window.run_page.gallery
        gallery.selectionModel().select(gallery.model_.index(0, 2), gallery.selectionModel().SelectionFlag.Select)
        dialog = window.run_page.export_dialog()
        dialog.folder.setText("/home/me/stable-diffusion-webui")
        dialog.show()
        QTimer.singleShot(300, lambda: (dialog.grab().save(str(OUT / "export-dialog.png")), app.quit()))

    def after_run(ok: bool) -> None:
        gallery = window.run_page.gallery
        gallery.selectionModel().clear()
        QTimer.singleShot(300, lambda: (shoot("run-page.png"), export_dialog()))

    window.run_page.run_finished.connect(after_run)
    def dataset_page() -> None:
        project = Path(tempfile.mkdtemp()) / "my-shapes"
        window.open_project(project, create=True)
        page = window.dataset_page
        page.import_finished.connect(lambda _r: QTimer.singleShot(800, after_import))
        page.import_paths([Path(__file__).resolve().parent.parent / "assets" / "sample_dataset"])

    def after_import() -> None:
        page = window.dataset_page
        page.grid.setCurrentIndex(page.grid.model_.index(1, 0))
        page.check_finished.connect(lambda _r: QTimer.singleShot(300, lambda: (shoot("dataset-page.png"),
                                                                               training_page())))
        page.run_check()

    def training_page() -> None:
        window.tabs.setCurrentWidget(window.training_page)
        window.training_page.model.setCurrentText("demo:sd15")
        when_memory_shown(lambda: (shoot("training-page.png"), window.try_demo()))

    def when_memory_shown(then, waited: int = 0) -> None:
        # the memory line is the engine's `plan`, a child process: wait for its answer (30 s at most)
        if "GB" in window.training_page.memory.text() or waited > 30_000:
            then()
        else:
            QTimer.singleShot(250, lambda: when_memory_shown(then, waited + 250))

    def dark_start_page() -> None:
        # the same window in a dark desktop scheme (theme.follow_system reacts to the system's switch)
        os.environ["LORA_STUDIO_THEME"] = "dark"
        theme.follow_system(app)
        QTimer.singleShot(300, lambda: (shoot("start-page-dark.png"), light_again()))

    def light_again() -> None:
        os.environ["LORA_STUDIO_THEME"] = "light"
        theme.follow_system(app)
        dataset_page()

    QTimer.singleShot(500, lambda: (shoot("start-page.png"), dark_start_page()))
    QTimer.singleShot(240_000, app.quit)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
