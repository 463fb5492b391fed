"""Loading one training image into its bucket, without modifying the file."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from trainer.shared.buckets import crop_plan
from trainer.shared.errors import DatasetError


@dataclass
class Prepared:
    """One training image as the model sees it, plus SDXL's size/crop conditioning."""

    pixels: torch.Tensor            # (3, H, W) in [-1, 1]
    original_size: tuple[int, int]  # (h, w) before resizing
    crop_top_left: tuple[int, int]  # (top, left) in the resized image


def load_bucket(path: Path, bucket: tuple[int, int], center_crop: bool, flip: bool,
                rng: random.Random | None) -> Prepared:
    """Resize to cover the bucket, crop it out (center or random), optionally mirror; pixels in [-1, 1]."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
    except OSError as exc:
        raise DatasetError(f"cannot read image {path}: {exc}", "remove or replace the file") from None
    w, h = im.size
    (rw, rh), (top, left) = crop_plan(w, h, bucket, center_crop, rng)
    im = im.resize((rw, rh), Image.Resampling.LANCZOS).crop((left, top, left + bucket[0], top + bucket[1]))
    if flip:
        im = ImageOps.mirror(im)
    array = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return Prepared(torch.from_numpy(array).permute(2, 0, 1).contiguous(), (h, w), (top, left))
