"""Check and normalise one image for a dataset: refuse what can't be trained on, say why.

The pixel count is checked from the header before any decoding, so a decompression bomb (a small file
that expands to gigabytes) is refused without allocating its pixels.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO"}
COPYABLE = {"JPEG", "PNG", "WEBP"}


class NormalizeError(ValueError):
    """The reason an image is refused, in words for the import report."""


def normalize_image(data: bytes, min_side: int, max_pixels: int) -> tuple[bytes, str]:
    """Return (bytes to write, suffix): the original bytes when nothing needs changing, else a PNG."""
    if not data:
        raise NormalizeError("empty file (0 bytes)")
    im = _open(data, max_pixels)
    w, h = im.size
    if min(w, h) < min_side:
        raise NormalizeError(f"too small: {w}x{h} (the shorter side must be at least {min_side} px)")
    try:
        im.seek(0)
        im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise NormalizeError(f"truncated or corrupt image: {exc}") from None
    orientation = im.getexif().get(0x0112, 1)
    animated = getattr(im, "n_frames", 1) > 1
    if im.format in COPYABLE and im.mode in ("RGB", "L") and orientation == 1 and not animated:
        return data, ".jpg" if im.format == "JPEG" else f".{im.format.lower()}"
    rgb = to_rgb(ImageOps.exif_transpose(im))
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue(), ".png"


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # our own pixel limit (below) decides; Pillow's warning threshold is lower than ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise NormalizeError(f"decompression bomb refused: {exc}") from None
    except UnidentifiedImageError:
        raise NormalizeError("not an image (or a format LoRA Studio can't read)") from None
    except OSError as exc:
        raise NormalizeError(f"truncated or corrupt image: {exc}") from None
    if im.format not in FORMATS:
        raise NormalizeError(f"unsupported format {im.format}; use JPEG, PNG, WebP, BMP, TIFF or GIF")
    w, h = im.size
    if w * h > max_pixels:
        raise NormalizeError(f"decompression bomb refused: {w}x{h} = {w * h:,} pixels (limit {max_pixels:,})")
    return im


def to_rgb(im: Image.Image) -> Image.Image:
    """Any mode -> RGB: transparency composited onto white, CMYK converted, 16-bit and float scaled."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or array.max() > 255 else 255.0
        im = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGB" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")
