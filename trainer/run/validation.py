"""Validation loss: held-out images, fixed timesteps, fixed noise, so the number is comparable from step to
step. Training loss mostly tracks which timesteps a step happened to draw; this one rises when the LoRA
starts to memorise its images instead of learning the subject (overfitting), which is when to stop.

Held out: the images of `validation = true` subsets in dataset.toml, else `validation.fraction` of the
images, picked by the seed (at least one, never all).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from trainer.shared import events as ev
from trainer.shared.config import TrainConfig
from trainer.shared.errors import DatasetError
from trainer.shared.steps import held_out_indices


def split_validation(cfg: TrainConfig, items: list) -> tuple[list, list]:
    """(training images, held-out images); held-out is empty when validation is off."""
    held_ids = held_out_indices(items, cfg.validation.fraction, cfg.schedule.seed)
    if not held_ids:
        return items, []
    held, held_set = [items[i] for i in held_ids], set(held_ids)
    train = [r for i, r in enumerate(items) if i not in held_set]
    if not train:
        raise DatasetError("every image of the dataset is held out for validation",
                           "mark only some subsets `validation = true` in dataset.toml")
    return train, held


def fixed_timesteps(cfg: TrainConfig, objective) -> list:
    """`validation.timesteps` points of the family objective's trained range, the same at every step."""
    return objective.validation_timesteps(cfg.loss, cfg.validation.timesteps)


class Validator:
    """Computes the validation loss with the model as it is; `condition(rt, batch, latents)` is the loop's
    conditioning, so validation sees exactly what training sees."""

    def __init__(self, rt, data, condition: Callable):
        self.rt, self.data, self.condition = rt, data, condition
        self.timesteps = fixed_timesteps(rt.cfg, rt.model.family.objective)

    def due(self, step: int, total: int) -> bool:
        every = self.rt.cfg.validation.every_n_steps
        return bool(self.data.active) and bool(every) and (step % every == 0 or step == total)

    def run(self, step: int) -> float | None:
        """Only the main process computes (the result is the same everywhere); it emits and logs it."""
        value = None
        if self.rt.accelerator.is_main_process:
            value = self._loss()
            self.rt.sink.emit(ev.Validation(step=step, loss=value, images=len(self.data.active)))
            self.rt.log_scalars(step, {"loss/validation": value})
        self.rt.accelerator.wait_for_everyone()
        return value

    @torch.no_grad()
    def _loss(self) -> float:
        unet = self.rt.model.unet
        was_training = unet.training
        unet.eval()  # no dropout: the same weights must give the same number
        generator = torch.Generator().manual_seed(self.rt.cfg.schedule.seed)  # the same noise every time
        losses = []
        try:
            for i in self.data.active:
                losses += self._image_losses(self.data.single(i), generator)
        finally:
            unet.train(was_training)
        return float(torch.stack(losses).mean())

    def _image_losses(self, batch, generator) -> list[torch.Tensor]:
        from trainer.run.encode import latent_distribution, sample_latents

        rt, model = self.rt, self.rt.model
        objective = model.family.objective
        params = batch.latent_params if batch.latent_params is not None else \
            latent_distribution(model.vae, batch.pixels.to(rt.device)).cpu()
        latents = sample_latents(model.vae, params.to(rt.device), generator, model.family).float()
        conditioning = self.condition(rt, batch, latents)
        out = []
        with rt.accelerator.autocast():
            for t in self.timesteps:
                timesteps = torch.tensor([t], device=rt.device)
                noise = torch.randn(latents.shape, generator=generator).to(rt.device)
                noisy = objective.noised(model, latents, noise, timesteps)
                pred = model.family.predict(model.unet, noisy.to(rt.weight_dtype), timesteps, conditioning)
                target = objective.target(model, latents, noise, timesteps)
                out.append(objective.loss(model, pred, target, timesteps, rt.cfg.loss, batch.masks)[0])
        return out
