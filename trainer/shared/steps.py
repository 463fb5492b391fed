"""How many optimizer steps a run takes: the engine's count, made torch-free so the GUI's estimate is the
same number `train` reports (held-out images, `N_name` repeats, dataset.toml subsets, buckets).

An image goes to its aspect-ratio bucket (trainer.shared.buckets); each bucket's images, times their repeats,
make ceil(n / batch_size) batches (a batch never mixes buckets); epochs of batches, divided by gradient
accumulation, are the steps. trainer.run.batches.Batches.epoch_plan builds those batches for real.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from trainer.shared.buckets import choose_bucket, make_buckets
from trainer.shared.config import TrainConfig
from trainer.shared.dataset_layout import Subset, read_dataset, subset_images
from trainer.shared.images import image_size


@dataclass
class SizedImage:
    """What counting needs of an image (trainer.data.spec.ImageRecord has the same fields)."""
    path: Path
    subset: Subset
    width: int
    height: int


def scan(root: Path) -> list[SizedImage]:
    """The dataset's readable images with their sizes (headers only). Raises DatasetError for a bad
    dataset.toml."""
    sized = [SizedImage(path, subset, *image_size(path)) for path, subset in subset_images(read_dataset(root))]
    return [s for s in sized if s.width and s.height]  # unreadable ones: training leaves them out too


def held_out_indices(items: list, fraction: float, seed: int) -> list[int]:
    """Which images validation holds out: `validation = true` subsets, else FRACTION of them picked by the
    seed (at least one, never all), else none. (random.sample picks by position, so sampling indices picks
    exactly the images sampling the list would.)"""
    marked = [i for i, r in enumerate(items) if r.subset.validation]
    if marked:
        return marked
    if fraction and len(items) > 1:
        count = min(len(items) - 1, max(1, round(fraction * len(items))))
        return random.Random(seed).sample(range(len(items)), count)
    return []


def batches_per_epoch(items: list, cfg: TrainConfig) -> int:
    """Batches in one epoch of ITEMS (training images, held-out ones already removed), on one process."""
    by_base = {base: make_buckets(base) for base in {r.subset.resolution or cfg.dataset.resolution for r in items}}
    seen: dict[tuple[int, int], int] = {}
    for r in items:
        buckets = by_base[r.subset.resolution or cfg.dataset.resolution]
        bucket = choose_bucket(r.width, r.height, buckets, cfg.dataset.allow_upscale).size
        seen[bucket] = seen.get(bucket, 0) + r.subset.repeats * cfg.dataset.repeats
    return sum(math.ceil(n / cfg.schedule.batch_size) for n in seen.values())


def total_steps(cfg: TrainConfig, batches: int) -> int:
    """Steps of the whole run: `schedule.epochs` epochs when set, else `schedule.max_steps`."""
    if cfg.schedule.epochs:
        return math.ceil(cfg.schedule.epochs * batches / cfg.schedule.gradient_accumulation)
    return cfg.schedule.max_steps


def training_images(items: list, cfg: TrainConfig) -> list:
    """ITEMS without the ones validation holds out."""
    held = set(held_out_indices(items, cfg.validation.fraction, cfg.schedule.seed))
    return [r for i, r in enumerate(items) if i not in held]


def steps_for(cfg: TrainConfig, items: list) -> tuple[int, int]:
    """(batches per epoch, total steps) of a run on ITEMS (scan()'s images), as `train` counts them."""
    batches = batches_per_epoch(training_images(items, cfg), cfg)
    return batches, total_steps(cfg, batches)
