"""Filling the caches before the first step: latents (memory + disk) and text conditioning.

An image whose latents come out NaN/inf (a broken file, an fp16 VAE overflow) is named in a warning and
left out of training instead of poisoning the run.
"""

from __future__ import annotations

import random

import torch

from trainer.data.folder import load_bucket
from trainer.data.latent_cache import LatentCache, default_cache_dir, file_sha256, vae_identity
from trainer.data.masks import load_mask
from trainer.run.batches import Batches
from trainer.run.encode import encode_text, latent_distribution
from trainer.shared import events as ev


@torch.no_grad()
def fill_latent_cache(data: Batches, vae, sink, cache_dir=None) -> LatentCache | None:
    if not data.cacheable_latents:
        return None
    disk = LatentCache(cache_dir or default_cache_dir(), vae_identity(vae))
    flips = (False, True) if data.cfg.dataset.flip else (False,)
    bad = []
    for i in list(data.active):
        record, bucket = data.records[i], data.buckets[i]
        for flip in flips:
            prepared = None
            key = disk.key(file_sha256(record.path), bucket, _center_crop(record, bucket), flip)
            params = disk.get(key, (2 * vae.config.latent_channels, bucket[1] // 8, bucket[0] // 8))
            if params is None:
                prepared = load_bucket(record.path, bucket, True, flip, None)
                params = latent_distribution(vae, prepared.pixels[None])[0].cpu()
                if not torch.isfinite(params).all():
                    bad.append(i)
                    break
                disk.put(key, params)
            data.latent_cache[(i, flip)] = params
            if data.cfg.loss.masked:
                data.mask_cache[(i, flip)] = load_mask(record, bucket, _center_crop(record, bucket), flip)
        data.sizes[i] = ((record.height, record.width), _center_crop(record, bucket))
    for i in bad:
        data.active.remove(i)
        sink.emit(ev.Warning(message=f"image {data.records[i].path} gives NaN latents and is left out",
                             hint="re-save or replace the image; if many images do this, use an fp32 VAE"))
    return disk


def _center_crop(record, bucket) -> tuple[int, int]:
    from trainer.shared.buckets import crop_plan

    return crop_plan(record.width, record.height, bucket, True)[1]


@torch.no_grad()
def fill_text_cache(data: Batches, model, device, cache: dict) -> None:
    """Adds the conditioning of `data`'s captions to `cache` (the runtime's, its one owner)."""
    rng = random.Random(0)  # captions don't vary when this cache is used, so the rng is never consulted
    # "" too: its one chunk pads shorter captions when a batch mixes chunk counts (encode.pad_chunks)
    for caption in sorted(({data.caption_for(i, rng) for i in data.active} | {""}) - cache.keys()):
        hidden, pooled = encode_text(model, [caption], device, clip_skip=data.cfg.model.clip_skip,
                                     max_tokens=data.cfg.dataset.max_token_length)
        cache[caption] = (hidden[0].cpu(), None if pooled is None else pooled[0].cpu())


def texts_known_ahead(cfg, records: list) -> list[str] | None:
    """Every caption and preview prompt the run will encode, or None when captions vary from step to step
    (shuffled tags, dropout): what a family that encodes before its denoiser loads encodes first."""
    from trainer.run.batches import captions_vary
    from trainer.shared.prompts import parse_prompt

    if captions_vary(records):
        return None
    prompts = [parse_prompt(text, cfg.sampling, cfg.dataset.resolution, i) for i, text in enumerate(cfg.sampling.prompts)]
    return [r.caption for r in records] + [""] + [p for s in prompts for p in (s.prompt, s.negative)]
