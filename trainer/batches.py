"""Batches for the loop: a deterministic order per epoch, cached latents and cached text conditioning.

The order of epoch E depends only on (seed, E), so a resumed run sees exactly the batches an uninterrupted
run would. Latents are cached as the VAE posterior's parameters (and sampled fresh each step) when the
crop is fixed; text conditioning is cached when the text encoders are frozen.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from trainer.config import TrainConfig
from trainer.data.folder import Item, load_square
from trainer.encode import encode_text, latent_distribution
from trainer.models.load import BaseModel


@dataclass
class Batch:
    indices: list[int]
    captions: list[str]
    latent_params: torch.Tensor | None    # cached VAE posterior parameters, or None
    pixels: torch.Tensor | None           # when latents are not cached
    original_sizes: list[tuple[int, int]]
    crops: list[tuple[int, int]]


class Batches:
    def __init__(self, cfg: TrainConfig, items: list[Item], rank: int = 0, world: int = 1):
        self.cfg, self.items, self.rank, self.world = cfg, items, rank, world
        self.latent_cache: dict[int, torch.Tensor] = {}
        self.text_cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.sizes: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {}

    @property
    def cacheable_latents(self) -> bool:
        d = self.cfg.dataset
        return self.cfg.performance.cache_latents and d.center_crop and not d.flip

    def batches_per_epoch(self) -> int:
        per_rank = math.ceil(len(self.items) * self.cfg.dataset.repeats / self.world)
        return math.ceil(per_rank / self.cfg.schedule.batch_size)

    def epoch(self, epoch: int, start: int = 0):
        order = [i for i in range(len(self.items)) for _ in range(self.cfg.dataset.repeats)]
        random.Random(self.cfg.schedule.seed * 1_000_003 + epoch).shuffle(order)
        per_rank = math.ceil(len(order) / self.world)
        order = (order * 2)[: per_rank * self.world]  # equal shards so no rank waits for another
        shard = order[self.rank:: self.world]
        bs = self.cfg.schedule.batch_size
        for b in range(start, self.batches_per_epoch()):
            yield self._batch(shard[b * bs:(b + 1) * bs], epoch, b)

    def _batch(self, indices: list[int], epoch: int, b: int) -> Batch:
        captions = [self.items[i].caption for i in indices]
        if self.cacheable_latents:
            params = torch.stack([self.latent_cache[i] for i in indices])
            sizes = [self.sizes[i] for i in indices]
            return Batch(indices, captions, params, None, [s[0] for s in sizes], [s[1] for s in sizes])
        rng = random.Random(hash((self.cfg.schedule.seed, epoch, b)))
        prepared = [load_square(self.items[i].image, self.cfg.dataset.resolution,
                                self.cfg.dataset.center_crop, rng) for i in indices]
        pixels = torch.stack([p.pixels for p in prepared])
        if self.cfg.dataset.flip:
            flips = torch.tensor([rng.random() < 0.5 for _ in indices])
            pixels[flips] = pixels[flips].flip(-1)
        return Batch(indices, captions, None, pixels, [p.original_size for p in prepared],
                     [p.crop_top_left for p in prepared])

    @torch.no_grad()
    def fill_latent_cache(self, vae, batch_size: int = 8) -> None:
        if not self.cacheable_latents:
            return
        res = self.cfg.dataset.resolution
        for start in range(0, len(self.items), batch_size):
            chunk = range(start, min(start + batch_size, len(self.items)))
            prepared = [load_square(self.items[i].image, res, True, None) for i in chunk]
            params = latent_distribution(vae, torch.stack([p.pixels for p in prepared])).cpu()
            for i, p, row in zip(chunk, prepared, params):
                self.latent_cache[i] = row
                self.sizes[i] = (p.original_size, p.crop_top_left)

    @torch.no_grad()
    def fill_text_cache(self, model: BaseModel, device) -> None:
        for caption in sorted({item.caption for item in self.items}):
            hidden, pooled = encode_text(model, [caption], device)
            self.text_cache[caption] = (hidden[0], None if pooled is None else pooled[0])
