"""The dataset page shows each image's loss mask (loss.masked) over it: the engine's rule for which file it is."""

from pathlib import Path

from PIL import Image
from PySide6.QtGui import QColor

from app.main_window import MainWindow


def _dataset_with_masks(qtbot, tmp_path):
    """A kohya subset: white.png masked by dataset/masks/white.png (left half black, ignored), plain.png
    without a mask, cutout.png whose right half is transparent."""
    window = MainWindow(data_dir=tmp_path / "app")
    qtbot.addWidget(window)
    window.open_project(tmp_path / "proj", create=True)
    dataset = tmp_path / "proj" / "dataset"
    subset = dataset / "10_char"
    (dataset / "masks").mkdir()
    subset.mkdir()
    Image.new("RGB", (200, 100), "white").save(subset / "white.png")
    left_black = Image.new("L", (50, 25), 255)   # another size than the image: stretched over it, as training does
    left_black.paste(0, (0, 0, 25, 25))
    left_black.save(dataset / "masks" / "white.png")
    Image.new("RGB", (200, 100), "white").save(subset / "plain.png")
    cutout = Image.new("RGBA", (200, 100), (255, 255, 255, 255))
    cutout.paste((255, 255, 255, 0), (100, 0, 200, 100))
    cutout.save(subset / "cutout.png")
    window.dataset_page.reload()
    return window.dataset_page, subset


def _pixel(preview, x_share: float) -> QColor:
    image = preview.picture.pixmap().toImage()
    return image.pixelColor(int(image.width() * x_share), image.height() // 2)


def test_an_image_with_a_mask_shows_it_tinted_and_the_toggle_hides_it(qtbot, tmp_path):
    page, subset = _dataset_with_masks(qtbot, tmp_path)
    assert page.grid.model_.rowCount() == 3            # the mask is not a training image
    preview = page.editor.preview
    page.grid.select_path(subset / "white.png")
    assert preview.mask.text() == "mask: masks/white.png" and preview.show_mask.isVisibleTo(preview)
    ignored, kept = _pixel(preview, 0.2), _pixel(preview, 0.8)
    assert ignored.lightness() < 150 and ignored.red() > ignored.green()   # tinted where the mask is black
    assert kept.getRgb()[:3] == (255, 255, 255)
    preview.show_mask.setChecked(False)
    assert _pixel(preview, 0.2).getRgb()[:3] == (255, 255, 255)
    preview.show_mask.setChecked(True)
    assert _pixel(preview, 0.2).lightness() < 150


def test_thumbnails_of_masked_images_carry_a_badge(qtbot, tmp_path):
    from app.widgets.thumbnails import MASK_ROLE

    page, subset = _dataset_with_masks(qtbot, tmp_path)
    items = page.grid.items
    assert page.grid.pool.waitForDone(20_000)
    qtbot.waitUntil(lambda: None not in (items[str(subset / name)].data(MASK_ROLE)   # the queued results arrived
                                         for name in ("white.png", "cutout.png")))
    assert {Path(path).name: item.data(MASK_ROLE) for path, item in items.items()} == {
        "white.png": "masks folder", "plain.png": None, "cutout.png": "alpha"}
    assert "loss mask: masks/ folder" in items[str(subset / "white.png")].toolTip()


def test_no_mask_no_overlay_and_the_alpha_channel_is_a_mask(qtbot, tmp_path):
    page, subset = _dataset_with_masks(qtbot, tmp_path)
    preview = page.editor.preview
    page.grid.select_path(subset / "plain.png")
    assert preview.mask.text() == "" and not preview.show_mask.isVisibleTo(preview) and not preview.overlay_shown()
    assert _pixel(preview, 0.2).getRgb()[:3] == (255, 255, 255)
    page.grid.select_path(subset / "cutout.png")
    assert preview.mask.text() == "mask: alpha channel"
    assert _pixel(preview, 0.2).getRgb()[:3] == (255, 255, 255) and _pixel(preview, 0.8).lightness() < 150


def test_a_broken_mask_file_is_named_not_drawn(qtbot, tmp_path):
    page, subset = _dataset_with_masks(qtbot, tmp_path)
    (subset.parent / "masks" / "white.png").write_text("not an image")
    preview = page.editor.preview
    page.grid.select_path(subset / "white.png")
    assert "masks/white.png" in preview.mask.text() and "not a readable image" in preview.mask.text()
    assert not preview.overlay_shown() and not preview.show_mask.isVisibleTo(preview)
    assert _pixel(preview, 0.2).getRgb()[:3] == (255, 255, 255)   # the image itself, untinted
