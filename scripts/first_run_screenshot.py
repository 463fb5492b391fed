"""Take docs/screenshots/first-run-start-screen.png: the start page as a first run shows it, with the facts
about this computer. The window itself is grabbed (a screen grab would add the bare screen around it).

    xvfb-run -s "-screen 0 1280x800x24" .venv/bin/python scripts/first_run_screenshot.py
"""

import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QStandardPaths, QTimer
from PySide6.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app import settings, theme  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from app.widgets.system_facts import SEEN_KEY  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "first-run-start-screen.png"


def main() -> int:
    app = QApplication(sys.argv)
    theme.follow_system(app)  # as `python -m app` looks (LORA_STUDIO_THEME=dark for the dark scheme)
    QStandardPaths.setTestModeEnabled(True)  # never touch the user's settings
    window = MainWindow(data_dir=Path(tempfile.mkdtemp()))
    settings.put(SEEN_KEY, False)  # a first run: the facts have not been dismissed yet
    window.resize(1200, 780)
    window.show()
    window.facts.show()

    def shoot() -> None:
        QTimer.singleShot(300, lambda: (window.grab().save(str(OUT)), print("saved", OUT), app.quit()))

    window.facts.ready.connect(shoot)
    QTimer.singleShot(120_000, app.quit)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
