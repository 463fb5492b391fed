"""Images into latents, and captions into conditioning through the model's family (its text strategy:
trainer.families.clip_text for the SD families). Training, the text cache, validation and previews all
encode here, so they always agree."""

from __future__ import annotations

import torch

from trainer.models.load import BaseModel
from trainer.run.accel import to_device


def encode_text(model: BaseModel, captions: list[str], device, encoders: list | None = None,
                clip_skip: int = 1, max_tokens: int = 75):
    """(hidden states, pooled or None) for `captions`, as the family conditions its denoiser."""
    return model.family.text.encode(model, captions, device, encoders, clip_skip, max_tokens)


def pad_chunks(model: BaseModel, hiddens: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
    """Stack per-caption hidden states of different lengths, padded as the family's encoder pads."""
    return model.family.text.pad(hiddens, empty)


@torch.no_grad()
def latent_distribution(vae, pixels: torch.Tensor) -> torch.Tensor:
    """The VAE posterior's parameters (mean and log-variance stacked on channels), cheap to cache."""
    return vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.parameters.float()


def sample_latents(vae, params: torch.Tensor, generator: torch.Generator | None, family=None) -> torch.Tensor:
    """A draw from the cached posterior, in the denoiser's latent space (the family's encode_latents)."""
    mean, logvar = params.chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    noise = torch.randn(mean.shape, generator=generator, device=generator.device if generator else None)
    latents = mean + std * to_device(noise, mean.device)
    if family is None:
        from trainer.families.base import Family

        family = Family()
    return family.encode_latents(vae, latents)
