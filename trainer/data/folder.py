"""A dataset folder: images with same-named `.txt` caption sidecars, read without modifying anything.

Each item is cropped to a square of `resolution` (the dataset layer's aspect-ratio buckets replace this).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from trainer.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


@dataclass
class Item:
    image: Path
    caption: str


@dataclass
class Prepared:
    """One training image as the model sees it, plus SDXL's size/crop conditioning."""

    pixels: torch.Tensor          # (3, H, W) in [-1, 1]
    original_size: tuple[int, int]  # (h, w) before resizing
    crop_top_left: tuple[int, int]  # (top, left) in the resized image


def read_caption(image: Path, extension: str = ".txt") -> str:
    sidecar = image.with_suffix(extension)
    if not sidecar.exists():
        return ""
    raw = sidecar.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # tolerate a BOM (Windows Notepad writes one)
    except UnicodeDecodeError:
        raise DatasetError(f"caption {sidecar} is not UTF-8 text",
                           "re-save it as UTF-8 (most editors offer this under 'Save as')") from None
    return " ".join(text.replace("\r\n", "\n").split("\n")).strip()


def scan(folder: Path, extension: str = ".txt") -> list[Item]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}",
                           "set dataset.path to a folder of images with same-named .txt captions")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not images:
        raise DatasetError(f"dataset folder {folder} holds no images",
                           "add .jpg/.png/.webp images (with optional same-named .txt captions)")
    return [Item(p, read_caption(p, extension)) for p in images]


def tag_frequency(items: list[Item]) -> dict[str, int]:
    counts = Counter(tag.strip() for item in items for tag in item.caption.split(",") if tag.strip())
    return dict(counts.most_common())


def load_square(path: Path, resolution: int, center_crop: bool, rng: random.Random | None) -> Prepared:
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
    except OSError as exc:
        raise DatasetError(f"cannot read image {path}: {exc}", "remove or replace the file") from None
    w, h = im.size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    im = im.resize((new_w, new_h), Image.Resampling.LANCZOS)
    if center_crop or rng is None:
        top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    else:
        top, left = rng.randint(0, new_h - resolution), rng.randint(0, new_w - resolution)
    im = im.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return Prepared(torch.from_numpy(array).permute(2, 0, 1).contiguous(), (h, w), (top, left))
