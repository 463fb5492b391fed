"""Rectified-flow matching (FLUX.1, and the 2026 DiTs after it): the objective strategy those families share.

A training point is x_σ = (1 − σ)·x₀ + σ·ε with σ in (0, 1); the model predicts the velocity ε − x₀. σ is
drawn logit-normal (SD3's "sigmoid" sampling, kohya's and ai-toolkit's FLUX default) and then shifted towards
noise, by FLUX's resolution-dependent shift (μ grows with the number of latent patches, as FLUX.1-dev and
diffusers' FluxPipeline sample) or by a fixed shift. The model sees σ itself as its timestep (diffusers' FLUX
transformer scales it by 1000 inside). Every draw comes from the loop's generator, so a resume repeats the run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainer.run.accel import to_device


class FlowMatching:
    """`dynamic_shift`: (base_seq_len, max_seq_len, base_shift, max_shift) of the resolution-dependent shift,
    or None for the fixed `shift` (1.0: none). `patch`: latent cells per image token along each side (2 for
    FLUX.1's 2x2 packing; 1 where the latents are patchified already, FLUX.2)."""

    def __init__(self, dynamic_shift: tuple | None = None, shift: float = 1.0, patch: int = 2):
        self.dynamic_shift, self.shift, self.patch = dynamic_shift, shift, patch

    def training_scheduler(self, scheduler, prediction_type: str):
        return scheduler  # FlowMatchEulerDiscreteScheduler: previews use it; training needs no table

    def prepare(self, model, loss, sink) -> None:
        """Nothing to rescale: there is no noise schedule of betas to fix (zero terminal SNR is built in)."""

    def shifted(self, sigmas: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if self.dynamic_shift:
            base_len, max_len, base_shift, max_shift = self.dynamic_shift
            patches = latents.shape[-2] * latents.shape[-1] / self.patch ** 2  # image tokens
            mu = base_shift + (max_shift - base_shift) * (patches - base_len) / (max_len - base_len)
            return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
        return self.shift * sigmas / (1 + (self.shift - 1) * sigmas)

    def noise(self, model, latents, generator, loss):
        """(noisy latents, noise, σ) for a training batch."""
        noise = to_device(torch.randn(latents.shape, generator=generator), latents.device)
        logits = torch.randn((latents.shape[0],), generator=generator)
        sigmas = self.shifted(torch.sigmoid(logits), latents).clamp(1e-4, 1 - 1e-4)
        sigmas = to_device(sigmas.float(), latents.device)
        return self.noised(model, latents, noise, sigmas), noise, sigmas

    def noised(self, model, latents, noise, sigmas):
        s = sigmas.view(-1, *[1] * (latents.dim() - 1)).to(latents.dtype)
        return (1 - s) * latents + s * noise

    def target(self, model, latents, noise, sigmas):
        return noise - latents

    def loss(self, model, pred, target, sigmas, loss, masks=None):
        """Per-sample L2 (or L1) of the velocity; masked latents add nothing, as in the DDPM objective."""
        fn = F.l1_loss if loss.type == "l1" else F.mse_loss
        per_element = fn(pred.float(), target.float(), reduction="none")
        if masks is not None:
            per_element = per_element * masks.to(per_element.device, per_element.dtype)
        return per_element.mean(dim=list(range(1, pred.dim())))

    def validation_timesteps(self, loss, count: int) -> list:
        """COUNT σ spread evenly over (0, 1): the middle of equal slices."""
        return [(k + 0.5) / count for k in range(count)]


# Loss options written for DDPM's noise schedule (its SNR, its timestep table): refused with flow matching
DDPM_ONLY = {"min_snr_gamma": 0, "debiased_estimation": False, "zero_terminal_snr": False,
             "multires_noise_iterations": 0, "input_perturbation": 0.0, "timestep_shift": 1.0,
             "noise_offset": 0.0, "min_timestep": 0, "max_timestep": 1000}


def refuse_ddpm_options(loss, label: str) -> None:
    from trainer.shared.errors import ConfigError

    for key, off in DDPM_ONLY.items():
        if getattr(loss, key) != off:
            raise ConfigError(f"config key 'loss.{key}' is set, but {label} trains by flow matching, which it "
                              "does not apply to", f"set loss.{key} = {off!r} (the default)")
    if loss.type not in ("l2", "l1"):
        raise ConfigError(f"config key 'loss.type' is '{loss.type}'; {label} trains with l2 or l1",
                          "set loss.type = \"l2\"")
