"""Batches for the loop: aspect-ratio buckets, a deterministic order per epoch, cached latents.

The order of epoch E depends only on (seed, E), so a resumed run sees exactly the batches an uninterrupted
run would. A batch never mixes buckets. With a fixed (center) crop, latents are cached as the VAE
posterior's parameters (sampled fresh each step), in memory and on disk. Text conditioning (cached when the
text encoders are frozen and captions don't vary) lives in the runtime, which the validator shares.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from trainer.data.captions import process_caption
from trainer.data.folder import load_bucket
from trainer.data.masks import load_mask
from trainer.data.spec import ImageRecord
from trainer.shared.buckets import choose_bucket, make_buckets
from trainer.shared.config import TrainConfig


@dataclass
class Batch:
    indices: list[int]
    captions: list[str]
    latent_params: torch.Tensor | None    # cached VAE posterior parameters, or None
    pixels: torch.Tensor | None           # when latents are not cached
    original_sizes: list[tuple[int, int]]
    crops: list[tuple[int, int]]
    loss_weights: torch.Tensor            # prior_loss_weight for regularisation images, else 1
    masks: torch.Tensor | None = None     # loss.masked: (B, 1, h, w) weights on the latent grid


class Batches:
    def __init__(self, cfg: TrainConfig, records: list[ImageRecord], rank: int = 0, world: int = 1):
        self.cfg, self.records, self.rank, self.world = cfg, records, rank, world
        by_base = {base: make_buckets(base) for base in
                   {r.subset.resolution or cfg.dataset.resolution for r in records}}
        self.buckets = [choose_bucket(r.width, r.height, by_base[r.subset.resolution or cfg.dataset.resolution],
                                      cfg.dataset.allow_upscale).size for r in records]
        self.active = list(range(len(records)))     # images dropped for NaN latents leave this list
        self.latent_cache: dict[tuple[int, bool], torch.Tensor] = {}
        self.sizes: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {}
        self.mask_cache: dict[tuple[int, bool], torch.Tensor] = {}  # loss.masked, beside the latent cache

    @property
    def cacheable_latents(self) -> bool:
        return self.cfg.performance.cache_latents and self.cfg.dataset.center_crop

    @property
    def captions_vary(self) -> bool:
        return captions_vary(self.records)

    def repeats(self, i: int) -> int:
        return self.records[i].subset.repeats * self.cfg.dataset.repeats

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.cfg.schedule.seed * 1_000_003 + epoch)
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for i in self.active:
            by_bucket.setdefault(self.buckets[i], []).extend([i] * self.repeats(i))
        bs = self.cfg.schedule.batch_size
        batches = []
        for bucket in sorted(by_bucket):
            members = by_bucket[bucket]
            rng.shuffle(members)
            batches += [members[k:k + bs] for k in range(0, len(members), bs)]
        rng.shuffle(batches)
        per_rank = math.ceil(len(batches) / self.world)
        batches = (batches * 2)[: per_rank * self.world]  # equal shards so no rank waits for another
        return batches[self.rank:: self.world]

    def batches_per_epoch(self) -> int:
        return len(self.epoch_plan(0))

    def epoch(self, epoch: int, start: int = 0):
        for b, indices in enumerate(self.epoch_plan(epoch)):
            if b >= start:
                yield self._batch(indices, epoch, b)

    def caption_for(self, i: int, rng: random.Random) -> str:
        r = self.records[i]
        s = r.subset
        return process_caption(r.caption, s.keep_tokens, s.shuffle_tags, s.tag_dropout, s.caption_dropout, rng)

    def single(self, i: int) -> Batch:
        """Image i alone, unflipped, with its caption as written: validation must not vary between steps."""
        return self._assemble([i], [False], [self.records[i].caption], random.Random(i))

    def _batch(self, indices: list[int], epoch: int, b: int) -> Batch:
        rng = random.Random(hash((self.cfg.schedule.seed, epoch, b)))
        flips = [self.cfg.dataset.flip and rng.random() < 0.5 for _ in indices]
        captions = [self.caption_for(i, rng) for i in indices]
        return self._assemble(indices, flips, captions, rng)

    def _assemble(self, indices: list[int], flips: list[bool], captions: list[str], rng) -> Batch:
        weights = torch.tensor([self.cfg.loss.prior_loss_weight if self.records[i].subset.is_reg else 1.0
                                for i in indices])
        if self.cacheable_latents:
            params = torch.stack([self.latent_cache[(i, f)] for i, f in zip(indices, flips)])
            sizes = [self.sizes[i] for i in indices]
            masks = torch.stack([self.mask_cache[(i, f)] for i, f in zip(indices, flips)]) if self.mask_cache else None
            return Batch(indices, captions, params, None, [s[0] for s in sizes], [s[1] for s in sizes], weights,
                         masks)
        prepared = [load_bucket(self.records[i].path, self.buckets[i], self.cfg.dataset.center_crop, f, rng)
                    for i, f in zip(indices, flips)]
        masks = torch.stack([load_mask(self.records[i], self.buckets[i], p.crop_top_left, f) for i, f, p in
                             zip(indices, flips, prepared)]) if self.cfg.loss.masked else None
        return Batch(indices, captions, None, torch.stack([p.pixels for p in prepared]),
                     [p.original_size for p in prepared], [p.crop_top_left for p in prepared], weights, masks)


def captions_vary(records: list) -> bool:
    """Whether an image's caption changes from step to step (shuffled tags, tag or caption dropout)."""
    return any(r.subset.shuffle_tags or r.subset.caption_dropout or r.subset.tag_dropout for r in records)
