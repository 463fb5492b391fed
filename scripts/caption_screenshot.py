"""Screenshot of the Auto-caption dialog after a real run (tiny test tagger, sample dataset), or with
`--vlm` after a preview with a tiny vision-language model (Qwen2.5-VL layout, random weights), under Xvfb:

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python scripts/caption_screenshot.py [--vlm]
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
from app.dataset_page import DatasetPage  # noqa: E402
from tests.support.caption_models import build_qwen_vl, build_tagger  # noqa: E402

TAGS = [("no_humans", 0, 0.9), ("simple_background", 0, 0.7), ("circle", 0, 0.6), ("blue_theme", 0, 0.4),
        ("shape", 0, 0.2)]


def main() -> int:
    app = QApplication(sys.argv)
    theme.follow_system(app)  # as `python -m app` looks (LORA_STUDIO_THEME=dark for the dark scheme)
    QStandardPaths.setTestModeEnabled(True)
    tmp = Path(tempfile.mkdtemp())
    folder = tmp / "dataset"
    shutil.copytree(ROOT / "assets" / "sample_dataset", folder, ignore=shutil.ignore_patterns("*.txt"))
    model = build_tagger(tmp / "wd-tagger", TAGS)
    page = DatasetPage()
    page.resize(1200, 760)
    page.set_folder(folder)
    page.show()
    if "--vlm" in sys.argv:
        return preview_shot(app, page, folder, build_qwen_vl(tmp / "Qwen2.5-VL-tiny"))
    dialog = page.auto_caption()
    dialog.model.setText(str(model))
    dialog.scope.setCurrentIndex(1)
    dialog.trigger.setText("zkx")
    dialog.exclude.setText("simple background")
    dialog.done.connect(lambda ok, msg: QTimer.singleShot(500, lambda: (
        dialog.grab().save(str(ROOT / "docs" / "screenshots" / "caption-dialog.png")), print("saved", msg),
        app.quit())))
    QTimer.singleShot(500, dialog.start)
    QTimer.singleShot(60_000, app.quit)
    return app.exec()


def preview_shot(app, page, folder: Path, model: Path) -> int:
    page.grid.select_path(sorted(folder.glob("*.png"))[0])
    dialog = page.auto_caption()
    dialog.model.setText(str(model))
    dialog.prompt.setText("Describe this image in one paragraph: subject, composition, lighting, style.")
    dialog.max_tokens.setValue(12)
    dialog.trigger.setText("zkx")
    dialog.show()

    def grab_when_done():
        if dialog.preview_job is not None:
            QTimer.singleShot(200, grab_when_done)
            return
        dialog.grab().save(str(ROOT / "docs" / "screenshots" / "caption-dialog-vlm.png"))
        print("saved", dialog.preview_text.text())
        app.quit()

    QTimer.singleShot(500, lambda: (dialog.preview(), QTimer.singleShot(500, grab_when_done)))
    QTimer.singleShot(90_000, app.quit)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
