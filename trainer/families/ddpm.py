"""The DDPM objective (SD1.x, SD2.x, SDXL): forward noising (with kohya's noise options), epsilon /
v-prediction targets, and the per-sample loss (L2, L1, Huber, smooth-L1; min-SNR or debiased weighting).
`Ddpm` is the objective strategy those families share; the loop and validation call only its methods.

Every random draw comes from the loop's generator, in a fixed order, and only when its option is on: runs
with the options off draw exactly what they always did, and a resume repeats the run.
`loss` below is trainer.shared.config.LossConfig.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from trainer.run.accel import to_device
from trainer.shared.errors import ConfigError


def add_noise(scheduler, latents: torch.Tensor, generator: torch.Generator, loss):
    """Return (noisy latents, noise, timesteps) for one batch, drawing from `generator` only."""
    b, c = latents.shape[:2]
    noise = to_device(torch.randn(latents.shape, generator=generator), latents.device)
    if loss.noise_offset:
        # A per-channel constant shift lets the model learn overall brightness (Guttenberg's noise offset).
        noise = noise + loss.noise_offset * to_device(torch.randn((b, c, 1, 1), generator=generator), latents.device)
    if loss.multires_noise_iterations:
        noise = pyramid_noise(noise, generator, loss.multires_noise_iterations, loss.multires_noise_discount)
    # pinned, non-blocking: a pageable copy would wait for the GPU
    timesteps = to_device(draw_timesteps(b, generator, loss), latents.device)
    noised_with = noise
    if loss.input_perturbation:
        # Input perturbation (Ning et al. 2023, kohya's ip_noise_gamma): the model sees slightly different noise
        # than the target names, which reduces the exposure bias between training and sampling.
        extra = to_device(torch.randn(latents.shape, generator=generator), latents.device)
        noised_with = noise + loss.input_perturbation * extra
    return scheduler.add_noise(latents, noised_with, timesteps), noise, timesteps


def draw_timesteps(count: int, generator: torch.Generator, loss) -> torch.Tensor:
    """Uniform timesteps in [min_timestep, max_timestep); with loss.timestep_shift s != 1, the position u in
    that window becomes s·u / (1 + (s−1)·u) (SD3's shift, Esser et al. 2024): s > 1 trains noisier steps more."""
    shift = loss.timestep_shift
    if shift == 1.0:  # exactly the draw runs made before the option existed
        return torch.randint(loss.min_timestep, loss.max_timestep, (count,), generator=generator)
    u = torch.rand((count,), generator=generator, dtype=torch.float64)
    shifted = shift * u / (1 + (shift - 1) * u)
    span = loss.max_timestep - loss.min_timestep
    return (loss.min_timestep + (shifted * span).long()).clamp(max=loss.max_timestep - 1)


def pyramid_noise(noise: torch.Tensor, generator: torch.Generator, iterations: int, discount: float):
    """Multi-resolution ("pyramid") noise: upsampled coarse noise added at falling weights, so the model also
    learns low-frequency changes (whole-image colour and light). As in kohya's pyramid_noise_like."""
    b, c, h, w = noise.shape
    for i in range(iterations):
        r = float(torch.rand((), generator=generator)) * 2 + 2  # each level 2-4x coarser than the last
        hn, wn = max(1, int(h / r ** i)), max(1, int(w / r ** i))
        coarse = torch.randn((b, c, hn, wn), generator=generator).to(noise.device)
        noise = noise + F.interpolate(coarse, size=(h, w), mode="bilinear") * discount ** i
        if hn == 1 or wn == 1:
            break
    return noise / noise.std()


def target_for(scheduler, prediction_type: str, latents, noise, timesteps) -> torch.Tensor:
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    # zero-terminal-SNR schedules reach exactly 0 at the last step; the floor keeps the weights finite
    return (alphas_cumprod / (1.0 - alphas_cumprod)).clamp(min=1e-8)


def loss_per_sample(pred, target, scheduler, timesteps, prediction_type: str, loss, masks=None) -> torch.Tensor:
    """The loss of each sample, weighted as configured. `masks` (loss.masked): (B, 1, h, w) weights on the
    latent grid; masked-out latents add nothing (kohya's masked loss: not renormalised by the mask's area)."""
    per_element = elementwise_loss(pred.float(), target.float(), scheduler, timesteps, loss)
    if masks is not None:
        per_element = per_element * masks.to(per_element.device, per_element.dtype)
    value = per_element.mean(dim=list(range(1, pred.dim())))
    v_pred = prediction_type == "v_prediction"
    if loss.min_snr_gamma:  # Hang et al. 2023
        s = snr(scheduler, timesteps)
        # for v-prediction the loss already carries a factor (snr + 1) relative to epsilon-loss
        value = value * torch.clamp(s, max=loss.min_snr_gamma) / (s + 1 if v_pred else s)
    if loss.debiased_estimation:
        # Debiased estimation (Yu et al. 2024, as kohya applies it): 1/sqrt(SNR) evens out the timesteps'
        # contributions; kohya caps SNR at 1000 so the lowest-noise steps keep some weight.
        s = snr(scheduler, timesteps).clamp(max=1000)
        value = value * (1 / (s + 1) if v_pred else 1 / torch.sqrt(s))
    return value


def elementwise_loss(pred, target, scheduler, timesteps, loss) -> torch.Tensor:
    if loss.type == "l2":
        return F.mse_loss(pred, target, reduction="none")
    if loss.type == "l1":
        return F.l1_loss(pred, target, reduction="none")
    # kohya's pseudo-Huber (Khrapov et al. 2024): quadratic below c, linear above; c per sample by timestep
    c = huber_c(scheduler, timesteps, loss).view(-1, *[1] * (pred.dim() - 1))
    root = torch.sqrt((pred - target) ** 2 + c ** 2) - c
    return 2 * c * root if loss.type == "huber" else 2 * root


def huber_c(scheduler, timesteps: torch.Tensor, loss) -> torch.Tensor:
    c = torch.full(timesteps.shape, loss.huber_c, dtype=torch.float32, device=timesteps.device)
    if loss.huber_schedule == "exponential":
        rate = -math.log(loss.huber_c) / scheduler.config.num_train_timesteps
        return torch.exp(-rate * timesteps.float())
    if loss.huber_schedule == "snr":
        sigmas = (1.0 / snr(scheduler, timesteps)) ** 0.5
        return (1 - loss.huber_c) / (1 + sigmas) ** 2 + loss.huber_c
    return c


def prepare_noise_schedule(model, loss, sink) -> None:
    """Zero terminal SNR (Lin et al. 2024): rescale the betas so the last timestep is pure noise, as the
    NoobAI-XL v-pred family and SD2-v fine-tunes were trained. On when asked, when the checkpoint carries
    the `ztsnr` marker key, or when a diffusers folder's scheduler already says so."""
    from trainer.shared import events as ev

    declared = declares_zero_terminal_snr(model.source)
    if not (loss.zero_terminal_snr or declared or model.noise_scheduler.config.get("rescale_betas_zero_snr")):
        return
    if model.prediction_type != "v_prediction":
        raise ConfigError("config key 'loss.zero_terminal_snr' needs a v-prediction model; this one predicts "
                          "epsilon, which cannot be learned at zero SNR",
                          "set model.prediction_type = \"v_prediction\" if the checkpoint is a v-pred one, "
                          "else turn loss.zero_terminal_snr off")
    from diffusers import DDPMScheduler

    # "trailing" spacing makes the previews' samplers start at that last, pure-noise step
    model.noise_scheduler = DDPMScheduler.from_config(model.noise_scheduler.config, rescale_betas_zero_snr=True,
                                                      timestep_spacing="trailing")
    if declared and not loss.zero_terminal_snr:
        sink.emit(ev.Warning(message="the checkpoint is marked zero-terminal-SNR (ztsnr); training with it",
                             hint="nothing to do; loss.zero_terminal_snr = true says the same explicitly"))


def declares_zero_terminal_snr(source: str) -> bool:
    path = Path(source)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    from trainer.models.safe_load import read_header

    shapes, _ = read_header(path)
    return "ztsnr" in shapes


class Ddpm:
    """The objective strategy: what the loop and validation ask of a family's objective."""

    def training_scheduler(self, scheduler, prediction_type: str):
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(scheduler.config, prediction_type=prediction_type)

    def prepare(self, model, loss, sink) -> None:
        prepare_noise_schedule(model, loss, sink)

    def noise(self, model, latents, generator, loss):
        """(noisy latents, noise, timesteps) for a training batch."""
        return add_noise(model.noise_scheduler, latents, generator, loss)

    def noised(self, model, latents, noise, timesteps):
        return model.noise_scheduler.add_noise(latents, noise, timesteps)

    def target(self, model, latents, noise, timesteps):
        return target_for(model.noise_scheduler, model.prediction_type, latents, noise, timesteps)

    def loss(self, model, pred, target, timesteps, loss, masks=None):
        return loss_per_sample(pred, target, model.noise_scheduler, timesteps, model.prediction_type, loss, masks)

    def validation_timesteps(self, loss, count: int) -> list[int]:
        """COUNT steps spread evenly over the trained range (the middle of equal slices)."""
        lo, hi = loss.min_timestep, loss.max_timestep
        return [int(lo + (k + 0.5) * (hi - lo) / count) for k in range(count)]
