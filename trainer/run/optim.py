"""Optimizers and learning-rate schedules, with separate UNet and text-encoder learning rates."""

from __future__ import annotations

import torch

from trainer.shared.config import TrainConfig
from trainer.shared.errors import ConfigError


def param_groups(cfg: TrainConfig, unet_params, te_params, lora_up: frozenset = frozenset()) -> list[dict]:
    """One group per learning rate. `lora_up`: ids of the B matrices, which LoRA+ gives their own group."""
    groups = [{"params": unet_params, "lr": cfg.optimizer.lr, "name": "unet"}]
    if te_params:
        groups.append({"params": te_params, "lr": cfg.optimizer.text_encoder_lr, "name": "text_encoder"})
    ratio = cfg.optimizer.loraplus_ratio
    if not ratio:
        return groups
    # LoRA+ (Hayou et al. 2024): B at ratio x the rate of A. The schedules scale every group alike, so the
    # ratio holds throughout (peft's create_loraplus_optimizer does the same, but builds the optimizer itself).
    split = []
    for group in groups:
        slow = [p for p in group["params"] if id(p) not in lora_up]
        fast = [p for p in group["params"] if id(p) in lora_up]
        split.append(dict(group, params=slow))
        split.append(dict(group, params=fast, lr=group["lr"] * ratio, name=group["name"] + "_lora_up"))
    return [g for g in split if g["params"]]


def build_optimizer(cfg: TrainConfig, groups: list[dict], device: torch.device) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "adamw":
        # The fused kernel (CUDA and CPU) is ~3x faster than foreach on many small LoRA tensors, which
        # matters: the optimizer step is most of the trainer's overhead around the UNet.
        kwargs = {"lr": o.lr, "betas": tuple(o.betas), "eps": o.eps, "weight_decay": o.weight_decay}
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):  # a device without a fused kernel
            return torch.optim.AdamW(groups, foreach=True, **kwargs)
    if o.name == "adamw8bit":
        return _adamw8bit(cfg, groups, device)
    if o.name == "prodigy":
        return _prodigy(cfg, groups)
    from transformers.optimization import Adafactor

    # fixed-LR Adafactor (the settings kohya documents for LoRA), so our schedulers drive the LR
    return Adafactor(groups, lr=o.lr, scale_parameter=False, relative_step=False, warmup_init=False,
                     weight_decay=o.weight_decay)


def _adamw8bit(cfg: TrainConfig, groups, device):
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ConfigError("config key 'optimizer.name' is 'adamw8bit' but bitsandbytes is not installed",
                          "pip install bitsandbytes (CUDA only), or use optimizer.name = \"adamw\"") from None
    if device.type != "cuda":
        raise ConfigError("config key 'optimizer.name' is 'adamw8bit', which needs a CUDA GPU",
                          "use optimizer.name = \"adamw\" on this machine")
    o = cfg.optimizer
    return bnb.optim.AdamW8bit(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


def _prodigy(cfg: TrainConfig, groups):
    try:
        from prodigyopt import Prodigy
    except ImportError:
        raise ConfigError("config key 'optimizer.name' is 'prodigy' but prodigyopt is not installed",
                          "pip install prodigyopt, or use optimizer.name = \"adamw\"") from None
    o = cfg.optimizer
    # Prodigy estimates the step size itself; lr is a multiplier and 1.0 is its documented default.
    return Prodigy(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                   safeguard_warmup=True, use_bias_correction=True)


def build_lr_scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    from diffusers.optimization import get_scheduler

    s = cfg.schedule
    kwargs = {"num_cycles": s.num_cycles} if s.lr_scheduler == "cosine_with_restarts" else {}
    return get_scheduler(s.lr_scheduler, optimizer, num_warmup_steps=s.warmup_steps,
                         num_training_steps=total_steps, **kwargs)


def prodigy_lr_warning(cfg: TrainConfig):
    """Prodigy finds its own step size and treats lr as a multiplier: anything far from 1 (like an AdamW
    rate carried over, 1e-4) makes it crawl or blow up. A warning, not an error: some users do damp it."""
    from trainer.shared import events as ev

    o = cfg.optimizer
    rates = {"optimizer.lr": o.lr}
    if cfg.lora.train_text_encoder:
        rates["optimizer.text_encoder_lr"] = o.text_encoder_lr
    off = [f"{key} = {value:g}" for key, value in rates.items() if not 0.5 <= value <= 2.0]
    if o.name != "prodigy" or not off:
        return None
    return ev.Warning(message=f"Prodigy adapts its own step size; its learning rate is a multiplier and "
                              f"{', '.join(off)} is far from 1", hint="set the learning rate(s) to 1.0 with Prodigy")
