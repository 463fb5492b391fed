"""The training objective: DDPM forward noising, epsilon / v-prediction targets, min-SNR weighting."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def add_noise(scheduler, latents: torch.Tensor, generator: torch.Generator, noise_offset: float):
    """Return (noisy latents, noise, timesteps) for one batch, drawing from `generator` only."""
    b, c = latents.shape[:2]
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    if noise_offset:
        # A per-channel constant shift lets the model learn overall brightness (Guttenberg's noise offset).
        noise = noise + noise_offset * torch.randn((b, c, 1, 1), generator=generator).to(latents.device)
    steps = scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (b,), generator=generator).to(latents.device)
    return scheduler.add_noise(latents, noise, timesteps), noise, timesteps


def target_for(scheduler, prediction_type: str, latents, noise, timesteps) -> torch.Tensor:
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas_cumprod / (1.0 - alphas_cumprod)


def loss_per_sample(pred, target, scheduler, timesteps, prediction_type: str, min_snr_gamma: float):
    """Mean squared error per sample, optionally min-SNR-gamma weighted (Hang et al. 2023)."""
    loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=list(range(1, pred.dim())))
    if min_snr_gamma:
        s = snr(scheduler, timesteps)
        weight = torch.clamp(s, max=min_snr_gamma)
        # for v-prediction the loss already carries a factor (snr + 1) relative to epsilon-loss
        loss = loss * weight / (s + 1 if prediction_type == "v_prediction" else s)
    return loss
