"""`python -m app` / `lora-studio` with no command: the desktop GUI."""

import sys


def main() -> int:
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow

    app = QApplication(sys.argv)
    app.setApplicationName("LoRA Studio")
    window = MainWindow()
    window.restore_last_project()
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
