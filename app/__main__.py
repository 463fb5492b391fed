"""`python -m app` / `lora-studio` with no command: the desktop GUI.

`--self-test` opens the main window, runs the demo through the engine child process exactly as a user's
click on "Try the demo" does, and exits 0 when the adapter was written: the bundle's smoke test, and a
quick check a user can run after installing.
"""

import sys
from pathlib import Path

ICON = Path(__file__).resolve().parent.parent / "assets" / "icon.png"
SELF_TEST_LIMIT_MS = 600_000


def main() -> int:
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from app import crash_handler, theme
    from app.main_window import MainWindow

    crash_handler.install()
    app = QApplication(sys.argv)
    app.setApplicationName("LoRA Studio")
    app.setDesktopFileName("lora-studio")  # lets the desktop match the window to packaging/lora-studio.desktop
    app.setWindowIcon(QIcon(str(ICON)))
    theme.follow_system(app)
    window = MainWindow()
    if "--self-test" in sys.argv:
        _self_test(app, window)
    else:
        window.restore_last_project()
    window.show()
    return app.exec()


def _self_test(app, window) -> None:
    from PySide6.QtCore import QTimer

    from trainer.shared.run_folder import final_adapters

    def finished(ok: bool) -> None:
        adapter = next(iter(final_adapters(window.run_page.run_dir)), None)
        print(f"self-test: {'passed' if ok and adapter else 'FAILED'}: run {window.run_page.run_dir}, "
              f"adapter {adapter}", flush=True)
        app.exit(0 if ok and adapter else 1)

    def give_up() -> None:
        print("self-test: FAILED: the demo did not finish in time", flush=True)
        app.exit(1)

    window.run_page.run_finished.connect(finished)
    QTimer.singleShot(500, window.try_demo)
    QTimer.singleShot(SELF_TEST_LIMIT_MS, give_up)


if __name__ == "__main__":
    sys.exit(main())
