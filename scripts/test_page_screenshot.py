"""Screenshot of the Test page with an X/Y grid (checkpoints × strengths) from the real engine on the tiny
model, plus the saved grid PNG, into docs/screenshots/ (run under Xvfb):

    xvfb-run -s "-screen 0 1280x800x24" .venv/bin/python scripts/test_page_screenshot.py
"""

import shutil
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QStandardPaths, QTimer
from PySide6.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app import theme  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from tests.support.loras import our_lora  # noqa: E402  (random-weight LoRAs standing in for checkpoints)

OUT = ROOT / "docs" / "screenshots"


def main() -> int:
    app = QApplication(sys.argv)
    theme.follow_system(app)  # as `python -m app` looks (LORA_STUDIO_THEME=dark for the dark scheme)
    QStandardPaths.setTestModeEnabled(True)
    work = Path(tempfile.mkdtemp())
    window = MainWindow(data_dir=work)
    window.resize(1280, 800)
    window.show()
    page = window.test_page
    window.tabs.setCurrentWidget(page)
    for step, seed in ((500, 1), (1000, 2)):
        page.loras.add(our_lora(work / "checkpoints" / f"mystyle-step{step:06d}.safetensors", seed=seed))
    page.settings_form.prompt.setPlainText("tok, a lighthouse at dusk")
    page.settings_form.steps.setValue(8)
    page.xy_strengths.setText("0, 0.5, 0.75, 1")

    def done() -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(OUT / "test-page.png"))
        if page.last_grid:
            shutil.copy(page.last_grid, OUT / "test-xy-grid.png")
        print("saved", OUT / "test-page.png", page.last_grid)
        page.shutdown()
        QTimer.singleShot(500, app.quit)

    page.jobs_finished.connect(lambda: QTimer.singleShot(300, done))
    QTimer.singleShot(500, page.xy_grid)
    QTimer.singleShot(300_000, app.quit)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
