"""Which files are training images, and which folders a scan skips."""

from __future__ import annotations

import os
from pathlib import Path

from trainer.shared.captions import caption_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
EXCLUDED_DIR = ".excluded"   # "Exclude" moves an image (and its caption) here, beside it: a hidden folder
MASKS_FOLDER = "masks"       # loss masks (trainer.data.masks) named like their images: never training images
# Pixels an image may have: Pillow's own refusal threshold (twice its warning one), 179 megapixels, 537 MB
# decoded as RGB. A bigger one (a 400-megapixel PNG, a decompression bomb) counts as unreadable: left out.
MAX_PIXELS = 178_956_970


def is_image(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def images_in(folder: Path, recursive: bool) -> list[Path]:
    """Sorted image files of FOLDER. Hidden folders (`.excluded`, `.cache`) and hidden files are skipped:
    setting an image aside is moving it into `.excluded/`. Masks in a `masks/` folder are skipped too."""
    folder = Path(folder)
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in pattern if is_image(p) and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                  and MASKS_FOLDER not in p.relative_to(folder).parts[:-1])


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as the model sees the image (upright after EXIF rotation); (0, 0) if unreadable or
    larger than MAX_PIXELS. Reads only the header."""
    import warnings

    from PIL import Image  # torch-free, but only scans need it

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS decides, below
            with Image.open(path) as im:
                w, h = im.size
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    w, h = h, w  # rotated by EXIF: the model sees it upright
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 0, 0
    return (w, h) if w * h <= MAX_PIXELS else (0, 0)


def set_aside(image: Path) -> Path:
    """Move IMAGE and its same-named caption into `.excluded/` beside it (nothing is deleted: moving them back
    includes them again). A name already set aside there gets a free `NAME-2` rather than overwriting it."""
    image = Path(image)
    aside = image.parent / EXCLUDED_DIR
    aside.mkdir(exist_ok=True)
    stem, n = image.stem, 1
    while any((aside / f"{stem}{suffix}").exists() for suffix in (image.suffix, ".txt")):
        n += 1
        stem = f"{image.stem}-{n}"
    caption = caption_path(image)
    if caption.exists():
        os.replace(caption, aside / f"{stem}.txt")
    target = aside / f"{stem}{image.suffix}"
    os.replace(image, target)
    return target
