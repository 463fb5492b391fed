"""Loss masks for loss.masked: which parts of each image the loss counts (white) and ignores (black).

Which file is an image's mask is trainer.shared.masks (the dataset page shows the same one): a same-named
image in a `masks/` folder, or else the image's own alpha channel (transparent = ignored). It goes through
the image's own resize, crop and flip, then down to the latent grid (area average, so an edge pixel of the
latent counts by how much of it is white), as kohya's masked loss does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from trainer.shared import masks as shared_masks
from trainer.shared.buckets import crop_plan
from trainer.shared.errors import DatasetError, some_files

LATENT_FACTOR = 8  # the VAE's downsampling


def mask_source(record) -> str:
    """'masks folder', 'alpha' or '' (no mask: the whole image counts)."""
    return shared_masks.mask_source(record.path, record.subset.folder)


def no_masks_warning(cfg, records: list):
    """A Warning event when loss.masked is on but no image has a mask (the option would change nothing)."""
    if not cfg.loss.masked or any(mask_source(r) for r in records):
        return None
    from trainer.shared import events as ev

    return ev.Warning(message="loss.masked is on but no image has a mask (a masks/ folder of same-named images "
                              "or an alpha channel): every image trains whole",
                      hint="add black-and-white masks in a masks/ folder of the dataset, or turn loss.masked off")


def unreadable_masks(records: list) -> list[tuple[Path, str]]:
    """(mask file, why) for every masks/ file of RECORDS that is not a readable image."""
    found = []
    for r in records:
        source = shared_masks.mask_file(r.path, r.subset.folder)
        if source is not None and (why := shared_masks.unreadable(source)):
            found.append((source, why))
    return found


def check_masks(cfg, records: list) -> None:
    """With loss.masked on, refuse a broken mask before the model loads, naming the files."""
    if not cfg.loss.masked:
        return
    broken = unreadable_masks(records)
    if broken:
        names = some_files([path for path, _ in broken])
        raise DatasetError(f"{len(broken)} loss mask(s) are not readable images: {names} ({broken[0][1]})",
                           "replace each with a black-and-white image of the same name, or delete it to train "
                           "that image whole")


def load_mask(record, bucket: tuple[int, int], crop_top_left: tuple[int, int], flip: bool) -> torch.Tensor:
    """(1, bucket_h / 8, bucket_w / 8) weights in [0, 1]; all ones when the image has no mask."""
    latent = (bucket[1] // LATENT_FACTOR, bucket[0] // LATENT_FACTOR)
    source = shared_masks.mask_file(record.path, record.subset.folder)
    if source is None and not shared_masks.has_alpha(record.path):
        return torch.ones((1, *latent))
    with Image.open(source or record.path) as im:
        im = ImageOps.exif_transpose(im)
        gray = im.convert("L") if source else im.convert("RGBA").getchannel("A")
    (rw, rh), _ = crop_plan(record.width, record.height, bucket, True)  # the size load_bucket resized to
    top, left = crop_top_left
    gray = gray.resize((rw, rh), Image.Resampling.BILINEAR).crop((left, top, left + bucket[0], top + bucket[1]))
    if flip:
        gray = ImageOps.mirror(gray)
    array = torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255.0)[None, None]
    return F.interpolate(array, size=latent, mode="area")[0]
