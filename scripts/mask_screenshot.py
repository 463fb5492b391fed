"""Screenshots of the loss-mask overlay on the dataset page and of the Advanced form's training-method keys
(docs/screenshots/dataset-page-mask.png, training-advanced.png), from a real window under Xvfb:

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python scripts/mask_screenshot.py

The dataset is drawn here: a figure on a sky, its mask (white figure, black sky) in the dataset's masks/
folder, so the picture shows what masked training ignores.
"""

import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw
from PySide6.QtCore import QStandardPaths, QTimer
from PySide6.QtWidgets import QApplication, QScrollArea

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app import theme  # noqa: E402
from app.main_window import MainWindow  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def figure_on_sky(size: int, hue: int) -> tuple[Image.Image, Image.Image]:
    """An image (gradient sky, green ground, a round-headed figure) and its mask: the figure white."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    for y in range(size):
        t = y / size
        draw.line([(0, y), (size, y)], fill=(int(90 + 150 * t), int(140 + 60 * t), int(230 - 90 * t)))
    draw.rectangle([0, int(size * 0.78), size, size], fill=(70, 140, 60))
    mask = Image.new("L", (size, size), 0)
    for target, colour in ((draw, (200, 60 + hue, 80)), (ImageDraw.Draw(mask), 255)):
        cx = size // 2 + hue - 40
        target.ellipse([cx - 40, int(size * 0.22), cx + 40, int(size * 0.22) + 80], fill=colour)
        target.rounded_rectangle([cx - 55, int(size * 0.22) + 85, cx + 55, int(size * 0.85)], 25, fill=colour)
    return image, mask


def make_dataset(folder: Path) -> None:
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for i, hue in enumerate((0, 40, 80, 120)):
        image, mask = figure_on_sky(384, hue)
        image.save(folder / f"figure_{i:02d}.png")
        (folder / f"figure_{i:02d}.txt").write_text("zkx, a person standing, sky", encoding="utf-8")
        if i < 3:   # the fourth has no mask: it trains whole
            mask.save(folder / "masks" / f"figure_{i:02d}.png")


def main() -> int:
    app = QApplication(sys.argv)
    theme.follow_system(app)
    QStandardPaths.setTestModeEnabled(True)  # never touch the user's settings
    window = MainWindow(data_dir=Path(tempfile.mkdtemp()))
    window.resize(1200, 780)
    window.show()
    project = Path(tempfile.mkdtemp()) / "my-character"
    window.open_project(project, create=True)
    make_dataset(project / "dataset")
    page = window.dataset_page
    page.reload()
    window.tabs.setCurrentWidget(page)

    def shoot(name: str) -> None:
        window.grab().save(str(OUT / name))
        print("saved", OUT / name)

    def advanced() -> None:
        training = window.training_page
        window.tabs.setCurrentWidget(training)
        training.advanced.setChecked(True)
        training.editors["lora.ema_decay"].editor.setText("0.9999")
        training.editors["lora.block_ranks"].editor.setText("[8, 16, 32]")
        QTimer.singleShot(300, lambda: scroll_to(training, "lora.ema_decay"))

    def scroll_to(training, key: str) -> None:
        area = training.findChild(QScrollArea)
        area.ensureWidgetVisible(training.editors[key], 50, 300)
        QTimer.singleShot(300, lambda: (shoot("training-advanced.png"), app.quit()))

    def dataset() -> None:
        page.grid.select_path(project / "dataset" / "figure_01.png")
        QTimer.singleShot(300, lambda: (shoot("dataset-page-mask.png"), advanced()))

    QTimer.singleShot(1500, dataset)   # thumbnails (and their mask badges) arrive from the thread pool
    QTimer.singleShot(60_000, app.quit)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
