"""Turning captions into text conditioning and images into latents, for SD1.x, SD2.x and SDXL."""

from __future__ import annotations

import torch

from trainer.accel import to_device
from trainer.models.load import BaseModel


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    # CLIP sees 77 tokens; longer captions are truncated (the dataset health report warns about them).
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def encode_text(model: BaseModel, captions: list[str], device, encoders: list | None = None,
                clip_skip: int = 1):
    """Return (encoder_hidden_states, pooled). pooled is SDXL's text_embeds from the second encoder.

    `encoders` replaces model.text_encoders when they are trained on several GPUs (DDP-wrapped).
    `clip_skip` is A1111's: SD1/SD2 take layer -clip_skip through the final layer norm (as kohya, A1111 and
    diffusers do); SDXL already conditions on the penultimate layer and moves back from there (diffusers' rule).
    Training, the text cache and previews all encode here, so they always agree.
    """
    encoders = encoders or model.text_encoders
    if not model.is_sdxl:
        ids = tokenize(model.tokenizers[0], captions).to(device)
        if clip_skip == 1:
            return encoders[0](ids)[0], None
        chosen = encoders[0](ids, output_hidden_states=True).hidden_states[-clip_skip]
        return _final_layer_norm(encoders[0])(chosen), None
    hidden, pooled = [], None
    for tokenizer, encoder in zip(model.tokenizers, encoders):
        ids = tokenize(tokenizer, captions).to(device)
        out = encoder(ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-1 - clip_skip])  # SDXL: the penultimate layer of both encoders
        pooled = out[0]                                    # text_embeds of the second (projection) encoder
    return torch.cat(hidden, dim=-1), pooled


def _final_layer_norm(encoder) -> torch.nn.Module:
    inner = getattr(encoder, "module", encoder)  # DDP-wrapped when trained on several GPUs
    # transformers 5 flattened CLIPTextModel; older releases keep it under .text_model
    return getattr(inner, "final_layer_norm", None) or inner.text_model.final_layer_norm


def sdxl_time_ids(original_sizes, crops, target: tuple[int, int], device, dtype) -> torch.Tensor:
    """SDXL's micro-conditioning: (orig_h, orig_w, crop_top, crop_left, target_h, target_w) per image."""
    rows = [[*orig, *crop, *target] for orig, crop in zip(original_sizes, crops)]
    return torch.tensor(rows, device=device, dtype=dtype)


@torch.no_grad()
def latent_distribution(vae, pixels: torch.Tensor) -> torch.Tensor:
    """The VAE posterior's parameters (mean and log-variance stacked on channels), cheap to cache."""
    return vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.parameters.float()


def sample_latents(vae, params: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    mean, logvar = params.chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    noise = torch.randn(mean.shape, generator=generator, device=generator.device if generator else None)
    latents = mean + std * to_device(noise, mean.device)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor
