"""Opening a dataset image the way a captioning model should see it."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps


def open_upright(path: Path) -> Image.Image:
    """Decoded and turned by its EXIF orientation: the model sees what the user sees."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        image.load()
    return image


def on_white(image: Image.Image) -> Image.Image:
    """RGB, with transparent parts white: a plain convert('RGB') turns them black (or into whatever
    colour hides under the alpha), which taggers read as a dark background."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")
