"""The dataset page's large preview of one image, with its loss mask (loss.masked) over it.

Which file is the mask is the engine's own rule (trainer.shared.masks): a same-named image in a `masks/`
folder, or the image's alpha channel. The part the loss ignores (black / transparent) is tinted, so a user
sees what training will learn from before starting it. "Show mask" turns the tint off.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QImageReader, QPixmap
from PySide6.QtWidgets import QCheckBox, QLabel, QVBoxLayout, QWidget

from app.widgets.rows import row
from trainer.shared import masks

TINT = (120, 0, 60)      # a dark magenta: unlike any skin or sky, so the ignored part never looks like the photo
TINT_STRENGTH = 0.7      # how much of a fully ignored pixel is tint (the image still shows through)
DECODE_SIDE = 1024       # images are reduced to this before tinting: a 24 MP photo stays quick to select


def mask_label(image: Path, dataset_root: Path | None) -> tuple[str, Path | None]:
    """("mask: masks/NAME.png", the file) / ("mask: alpha channel", None) / ("", None) for IMAGE."""
    subset = masks.subset_folder_of(image, masks.subset_folders(dataset_root)) if dataset_root else image.parent
    found = masks.mask_file(image, subset)
    if found is not None:
        return f"mask: {found.parent.name}/{found.name}", found
    return ("mask: alpha channel", None) if masks.has_alpha(image) else ("", None)


def masked_image(image: Path, mask: Path | None) -> QImage:
    """IMAGE upright (EXIF) with the ignored part tinted; MASK is the masks/ file, or None for the alpha channel.
    The mask is stretched to the image, as training does (trainer.data.masks.load_mask)."""
    from PIL import Image, ImageOps

    with Image.open(image) as im:
        im.draft("RGB", (DECODE_SIDE, DECODE_SIDE))   # JPEG: decode at a reduced size straight away
        im.thumbnail((DECODE_SIDE, DECODE_SIDE))      # before any copy: a 12 MP PNG stays quick
        shown = ImageOps.exif_transpose(im).convert("RGBA")
    if mask is None:
        kept = shown.getchannel("A")
    else:
        with Image.open(mask) as m:
            kept = ImageOps.exif_transpose(m).convert("L").resize(shown.size, Image.Resampling.BILINEAR)
    tint_share = ImageOps.invert(kept).point(lambda v: int(v * TINT_STRENGTH))
    rgb = Image.composite(Image.new("RGB", shown.size, TINT), shown.convert("RGB"), tint_share)
    data = rgb.tobytes()
    return QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888).copy()


class ImagePreview(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.picture = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.picture.setMinimumSize(320, 320)
        self.show_mask = QCheckBox("Show mask")
        self.show_mask.setChecked(True)
        self.show_mask.setToolTip("tint the part of the image the loss ignores (loss.masked): black in its mask "
                                  "in a masks/ folder, or transparent")
        self.show_mask.toggled.connect(self._paint)
        self.mask = QLabel("")
        self.dataset_root: Path | None = None
        self.image: Path | None = None
        self.mask_file: Path | None = None
        self.mask_broken = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.picture, 1)
        layout.addWidget(row(self.show_mask, self.mask, QWidget()))   # the spacer keeps the label by its box

    def show_image(self, image: Path) -> None:
        self.image = Path(image)
        label, self.mask_file = mask_label(self.image, self.dataset_root)
        self.mask_broken = bool(self.mask_file and masks.unreadable(self.mask_file))
        if self.mask_broken:  # training refuses it (trainer.data.masks.check_masks): say so here first
            label += " — not a readable image: replace or delete it"
        self.mask.setText(label)
        self.mask.setStyleSheet("color: #c0392b" if self.mask_broken else "")
        self.show_mask.setVisible(bool(label) and not self.mask_broken)
        self._paint()

    def has_mask(self) -> bool:
        return bool(self.mask.text())

    def overlay_shown(self) -> bool:
        return self.has_mask() and not self.mask_broken and self.show_mask.isChecked()

    def _paint(self) -> None:
        if self.image is None:
            return
        if self.overlay_shown():
            pixmap = QPixmap.fromImage(masked_image(self.image, self.mask_file))
        else:
            reader = QImageReader(str(self.image))
            reader.setAutoTransform(True)  # EXIF orientation, as training (and the tinted view) sees it
            size = reader.size()
            if size.isValid():            # decode at about the shown size (JPEG decodes reduced, fast)
                reader.setScaledSize(size.scaled(min(size.width(), DECODE_SIDE), min(size.height(), DECODE_SIDE),
                                                 Qt.AspectRatioMode.KeepAspectRatio))
            pixmap = QPixmap.fromImage(reader.read())
        self.picture.setPixmap(pixmap.scaled(self.picture.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation))
