"""Screenshots of each New LoRA wizard page in docs/screenshots/wizard-N-*.png (run under Xvfb).

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python scripts/wizard_screenshots.py
    xvfb-run -a -s "-screen 0 1280x1100x24" .venv/bin/python scripts/wizard_screenshots.py MODEL 12

With a model (typed into "My model file") and a GPU size in GB, the pages are saved as
wizard-N-NAME-<family of the model>.png: the settings the wizard picks for that family and card.

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


CARDS = {8: "NVIDIA GeForce RTX 3070", 12: "NVIDIA GeForce RTX 3060", 16: "NVIDIA GeForce RTX 4060 Ti",
         24: "NVIDIA GeForce RTX 4090"}


def main() -> int:
    model, gb = (sys.argv[1], int(sys.argv[2])) if len(sys.argv) > 2 else ("", 8)
    suffix = "-" + (model[5:] if model.startswith("demo:") else Path(model).stem) if model else ""
    app = QApplication(sys.argv[:1])
    theme.follow_system(app)  # as `python -m app` looks (LORA_STUDIO_THEME=dark for the dark scheme)
    QStandardPaths.setTestModeEnabled(True)  # never touch the user's settings (recent and last project)
    wizard = NewLoraWizard(Path(tempfile.mkdtemp()) / "LoRA Studio",
                           SystemInfo([Gpu(CARDS[gb], float(gb), gb * 0.95, True)]))
    if model:  # tall enough that the settings page shows every line (block swap, a capped resolution)
        wizard.resize(900, 1060)
    wizard.show()
    steps = {
        0: lambda: wizard.kind_page.name.setText("shapes-character"),
        1: lambda: choose_model(wizard, model),
        2: lambda: wizard.images_page.import_paths([ROOT / "assets" / "sample_dataset"]),
        3: lambda: (wizard.captions_page.trigger.setText("zkx"), wizard.captions_page.class_word.setText("shape")),
    }
    ready = {1: lambda: wizard.model_page.isComplete(),  # the engine has said what the demo's family is
             2: lambda: "8 images" in wizard.images_page.report.text(),
             3: lambda: wizard.captions_page.preview.rowCount() > 0 and
             wizard.captions_page.preview.item(0, 2).text().startswith("zkx"),
             4: lambda: "predicting" not in wizard.settings_page.memory.text()}

    def page_index() -> int:
        return wizard.pageIds().index(wizard.currentId())

    def shoot_when_ready(index: int, tries: int = 0) -> None:
        if not ready.get(index, lambda: True)() and tries < 200:
            QTimer.singleShot(100, lambda: shoot_when_ready(index, tries + 1))
            return
        QTimer.singleShot(300, lambda: shoot(index))

    def shoot(index: int) -> None:
        path = OUT / f"wizard-{index + 1}-{NAMES[index]}{suffix}.png"
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


def choose_model(wizard, model: str) -> None:
    if model:  # typed into "My model file", as a user names a checkpoint
        wizard.model_page.own.setChecked(True)
        wizard.model_page.model.setCurrentText(model)
    else:
        wizard.model_page.demo.setChecked(True)


if __name__ == "__main__":
    sys.exit(main())
