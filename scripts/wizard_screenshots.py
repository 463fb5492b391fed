"""Screenshots of each New LoRA wizard page in docs/screenshots/wizard-N-*.png (run under Xvfb).

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python scripts/wizard_screenshots.py

This machine has no GPU, so the wizard is shown a typical 8 GB card (RTX 3070) to illustrate the settings it
picks; the engine does everything else for real (image import and check, caption preview and writing).
"""

import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QStandardPaths, QTimer
from PySide6.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app import theme  # noqa: E402
from app.wizard.plan import Gpu, SystemInfo  # noqa: E402
from app.wizard.wizard import NewLoraWizard  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
NAMES = ["kind", "model", "images", "captions", "settings", "prompts", "summary"]


def main() -> int:
    app = QApplication(sys.argv)
    theme.follow_system(app)  # as `python -m app` looks (LORA_STUDIO_THEME=dark for the dark scheme)
    QStandardPaths.setTestModeEnabled(True)  # never touch the user's settings (recent and last project)
    wizard = NewLoraWizard(Path(tempfile.mkdtemp()) / "LoRA Studio",
                           SystemInfo([Gpu("NVIDIA GeForce RTX 3070", 8.0, 7.6, True)]))
    wizard.show()
    steps = {
        0: lambda: wizard.kind_page.name.setText("shapes-character"),
        1: lambda: wizard.model_page.demo.setChecked(True),
        2: lambda: wizard.images_page.import_paths([ROOT / "assets" / "sample_dataset"]),
        3: lambda: (wizard.captions_page.trigger.setText("zkx"), wizard.captions_page.class_word.setText("shape")),
    }
    ready = {1: lambda: wizard.model_page.isComplete(),  # the engine has said what the demo's family is
             2: lambda: "8 images" in wizard.images_page.report.text(),
             3: lambda: wizard.captions_page.preview.rowCount() > 0 and
             wizard.captions_page.preview.item(0, 2).text().startswith("zkx")}

    def page_index() -> int:
        return wizard.pageIds().index(wizard.currentId())

    def shoot_when_ready(index: int, tries: int = 0) -> None:
        if not ready.get(index, lambda: True)() and tries < 200:
            QTimer.singleShot(100, lambda: shoot_when_ready(index, tries + 1))
            return
        QTimer.singleShot(300, lambda: shoot(index))

    def shoot(index: int) -> None:
        path = OUT / f"wizard-{index + 1}-{NAMES[index]}.png"
        wizard.grab().save(str(path))
        print("saved", path)
        if index == len(NAMES) - 1:
            app.quit()
            return
        wizard.next()
        QTimer.singleShot(200, advance)

    def advance() -> None:
        index = page_index()
        if index != getattr(advance, "last", None):
            advance.last = index
            steps.get(index, lambda: None)()
            shoot_when_ready(index)
        else:  # the captions page writes first, then moves on by itself
            QTimer.singleShot(200, advance)

    QTimer.singleShot(500, advance)
    QTimer.singleShot(120_000, app.quit)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
