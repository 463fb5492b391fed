"""Aspect-ratio buckets: train each image near its own shape instead of a center square.

Buckets are 64-px multiples whose area stays within the base area (the training resolution squared; a
model's native resolution is its family's fact).
An image goes to the bucket of closest aspect ratio; without upscaling, an image smaller than that bucket
goes to a smaller bucket of the same shape instead of being blown up.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketChoice:
    size: tuple[int, int]   # (width, height)
    upscaled: bool


def make_buckets(base: int, step: int = 64, max_ratio: float = 2.5) -> list[tuple[int, int]]:
    area = base * base
    buckets = set()
    for w in range(step, base * 2 + 1, step):
        h = min(area // w // step * step, base * 2)
        if h >= step and max(w / h, h / w) <= max_ratio:
            buckets.add((w, h))
            buckets.add((h, w))
    return sorted(buckets)


def choose_bucket(w: int, h: int, buckets: list[tuple[int, int]], allow_upscale: bool = False,
                  step: int = 64) -> BucketChoice:
    aspect = math.log(w / h)
    bw, bh = min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1]))
    scale = min(w / bw, h / bh)
    if scale >= 1:
        return BucketChoice((bw, bh), False)
    if allow_upscale:
        return BucketChoice((bw, bh), True)
    small = (max(step, int(bw * scale) // step * step), max(step, int(bh * scale) // step * step))
    return BucketChoice(small, False)


def crop_plan(w: int, h: int, bucket: tuple[int, int], center: bool = True,
              rng: random.Random | None = None) -> tuple[tuple[int, int], tuple[int, int]]:
    """((resized w, h), (crop top, left)): resize to cover the bucket, then crop it out.

    The crop's top-left, with the original (h, w), is exactly SDXL's size/crop conditioning.
    """
    bw, bh = bucket
    r = max(bw / w, bh / h)
    rw, rh = max(bw, round(w * r)), max(bh, round(h * r))
    if center or rng is None:
        return (rw, rh), ((rh - bh) // 2, (rw - bw) // 2)
    return (rw, rh), (rng.randint(0, rh - bh), rng.randint(0, rw - bw))


@dataclass
class BucketPlan:
    images: dict[tuple[int, int], int]
    upscaled: int

    def to_dict(self) -> dict:
        return {"buckets": {f"{w}x{h}": n for (w, h), n in sorted(self.images.items())},
                "upscaled": self.upscaled}


def bucket_plan(sizes: list[tuple[int, int]], base: int, allow_upscale: bool = False) -> BucketPlan:
    """Images per bucket for SIZES (width, height). Steps are counted by trainer.shared.steps."""
    buckets = make_buckets(base)
    counts: dict[tuple[int, int], int] = {}
    upscaled = 0
    for w, h in sizes:
        choice = choose_bucket(w, h, buckets, allow_upscale)
        counts[choice.size] = counts.get(choice.size, 0) + 1
        upscaled += choice.upscaled
    return BucketPlan(counts, upscaled)
