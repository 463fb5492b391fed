"""Config checks that involve more than one key (trainer.shared.config checks each key's own range).

Torch-free like trainer.shared.config, which calls `validate` on every load and re-exports it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from trainer.shared.errors import ConfigError
from trainer.shared.prompts import parse_prompt

if TYPE_CHECKING:
    from trainer.shared.config import LoraConfig, LossConfig, TrainConfig


def validate(cfg: TrainConfig) -> None:
    """Checks that involve more than one key."""
    if cfg.performance.attention == "xformers" and cfg.performance.device == "cpu":
        raise ConfigError("config key 'performance.attention' is 'xformers' but performance.device is cpu",
                          "use attention = \"sdpa\"")
    if cfg.lora.train_text_encoder and cfg.optimizer.text_encoder_lr == 0 and cfg.optimizer.name != "prodigy":
        raise ConfigError("config key 'optimizer.text_encoder_lr' is 0 while lora.train_text_encoder is true",
                          "set a text-encoder learning rate (5e-5 is common) or turn text-encoder training off")
    if len(cfg.optimizer.betas) != 2 or not all(_number(b) and 0 <= b < 1 for b in cfg.optimizer.betas):
        raise ConfigError(f"config key 'optimizer.betas' is {cfg.optimizer.betas!r}; it takes two numbers from 0 "
                          "to below 1", "for example [0.9, 0.999]")
    _validate_adapter(cfg.lora)
    if cfg.optimizer.loraplus_ratio and cfg.lora.algorithm != "lora":
        raise ConfigError(f"config key 'optimizer.loraplus_ratio' is set while lora.algorithm is "
                          f"'{cfg.lora.algorithm}'", "LoRA+ speeds up plain LoRA's B matrices: set lora.algorithm "
                          "= \"lora\" or loraplus_ratio = 0")
    _validate_loss(cfg.loss)
    if cfg.performance.blocks_to_swap and not cfg.performance.gradient_checkpointing:
        # refused, not switched on quietly: the config written to the run folder says what ran
        raise ConfigError(f"config key 'performance.blocks_to_swap' is {cfg.performance.blocks_to_swap} while "
                          "performance.gradient_checkpointing is false", "block swap brings each block back for "
                          "the backward by recomputing it: set performance.gradient_checkpointing = true")
    if cfg.performance.blocks_to_swap and cfg.performance.compile:
        # compile traces each block's call, the swap's hooks included, which move weights in and out of it
        raise ConfigError(f"config key 'performance.blocks_to_swap' is {cfg.performance.blocks_to_swap} while "
                          "performance.compile is true", "they do not work together yet: set "
                          "performance.compile = false, or blocks_to_swap = 0 where the model fits")
    _check_blocks("optimizer.block_lr", cfg.optimizer.block_lr, (int, float), 0)
    if cfg.sampling.use_ema and not cfg.lora.ema_decay:
        raise ConfigError("config key 'sampling.use_ema' is true while lora.ema_decay is 0 (no EMA is kept)",
                          "set lora.ema_decay (0.999 is usual) or sampling.use_ema = false")
    for index, prompt in enumerate(cfg.sampling.prompts):  # a bad --w/--s fails now, not at the first preview
        parse_prompt(prompt, cfg.sampling, cfg.dataset.resolution, index)
    if not cfg.sampling.prompts and cfg.sampling.every_n_steps:
        raise ConfigError("config key 'sampling.prompts' is empty while sampling is on",
                          "add a prompt or set sampling.every_n_steps = 0")


def _validate_loss(loss: LossConfig) -> None:
    if loss.min_timestep >= loss.max_timestep:
        raise ConfigError(f"config key 'loss.min_timestep' is {loss.min_timestep}, not below loss.max_timestep "
                          f"({loss.max_timestep})", "timesteps are drawn from min_timestep to max_timestep - 1")


def _validate_adapter(lc: LoraConfig) -> None:
    if lc.dora and lc.algorithm != "lora":
        raise ConfigError(f"config key 'lora.dora' is true while lora.algorithm is '{lc.algorithm}'",
                          "DoRA is a variant of plain LoRA: set lora.algorithm = \"lora\" or dora = false")
    if lc.lokr_factor in (0, 1):
        raise ConfigError(f"config key 'lora.lokr_factor' is {lc.lokr_factor}; use -1 (balanced) or 2 to 64",
                          "LyCORIS suggests 4 to 8")
    if lc.rslora and lc.algorithm != "lora":
        raise ConfigError(f"config key 'lora.rslora' is true while lora.algorithm is '{lc.algorithm}'",
                          "rsLoRA is a scaling rule of plain LoRA: set lora.algorithm = \"lora\" or rslora = false")
    if lc.init_from and (lc.algorithm != "lora" or lc.dora):
        raise ConfigError(f"config key 'lora.init_from' is set while lora.algorithm is '{lc.algorithm}'"
                          f"{' with DoRA' if lc.dora else ''}", "a LoRA file continues as plain LoRA: set "
                          "lora.algorithm = \"lora\" and dora = false, or leave init_from empty")
    if lc.algorithm == "adalora":
        _validate_adalora(lc)
    _check_blocks("lora.block_ranks", lc.block_ranks, int, 1)
    _check_blocks("lora.block_alphas", lc.block_alphas, (int, float), 0)
    if (lc.conv_rank or lc.conv_alpha) and lc.targets != "full":
        raise ConfigError(f"config key 'lora.conv_rank'/'lora.conv_alpha' is set while lora.targets is "
                          f"'{lc.targets}', which trains no convolution", "set lora.targets = \"full\" "
                          "(LoCon) or conv_rank = 0 and conv_alpha = 0")


def _validate_adalora(lc: LoraConfig) -> None:
    if lc.targets == "full" or lc.conv_rank or lc.block_ranks or lc.block_alphas:
        raise ConfigError("config key 'lora.algorithm' is 'adalora' with convolutions or per-block ranks "
                          "(lora.targets = \"full\", conv_rank, block_ranks, block_alphas)",
                          "AdaLoRA adapts linear layers and sets each layer's rank itself: use lora.targets = "
                          "\"attention\" or \"attention+ff\" and leave the per-block ranks empty")
    if lc.adalora_init_rank and lc.adalora_init_rank <= lc.rank:
        raise ConfigError(f"config key 'lora.adalora_init_rank' is {lc.adalora_init_rank}, not above lora.rank "
                          f"({lc.rank})", "AdaLoRA starts above the target rank and prunes down to it; 0 = 1.5 x rank")
    if lc.ema_decay:  # the average would keep the triplets the allocator pruned, at ever smaller values
        raise ConfigError("config key 'lora.ema_decay' is set while lora.algorithm is 'adalora'",
                          "AdaLoRA prunes ranks as it trains, which a moving average cannot follow: set "
                          "lora.ema_decay = 0 or use lora.algorithm = \"lora\"")
    if lc.adalora_warmup + lc.adalora_final >= 1:
        raise ConfigError("config keys 'lora.adalora_warmup' + 'lora.adalora_final' reach 1",
                          "leave part of the run for moving the budget, e.g. 0.1 and 0.3")


def _check_blocks(key: str, values: list, kinds, lowest: float) -> None:
    """A per-block list: empty (off) or numbers, one per block group of the model's family; how many groups
    is the family's fact (`check_block_lists`, checked once the model is known)."""
    if not values:
        return
    if not all(isinstance(v, kinds) and _number(v) and v >= lowest for v in values):
        kind = "whole numbers from 1" if kinds is int else f"numbers from {lowest}"
        raise ConfigError(f"config key '{key}' is {values!r}; it takes {kind}, one per block group",
                          "for example [8, 16, 32] for a UNet's [down, mid, up], or [] to use one value everywhere")


def _number(value) -> bool:
    """A finite int or float (NaN and infinity pass every comparison test that is written as a refusal)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_block_lists(cfg: TrainConfig, groups: list[str]) -> None:
    """Per-block lists hold one value per block group of the model's family (UNets: down, mid, up; FLUX.1:
    double, single): the family's check, and the GUI's once the engine has named the groups."""
    for key, values in (("lora.block_ranks", cfg.lora.block_ranks), ("lora.block_alphas", cfg.lora.block_alphas),
                        ("optimizer.block_lr", cfg.optimizer.block_lr)):
        if values and len(values) != len(groups):
            raise ConfigError(f"config key '{key}' is {values!r}; this model has {len(groups)} block groups: "
                              f"[{', '.join(groups)}]", f"give {len(groups)} values, or [] to use one value everywhere")


def inactive_keys(cfg: TrainConfig) -> dict[str, str]:
    """Keys whose value changes nothing with the rest of CFG as it is, each with the setting it waits for
    (the GUI greys them out with that reason; the engine ignores them)."""
    lc, loss, s = cfg.lora, cfg.loss, cfg.sampling
    rules = [
        (lc.algorithm != "adalora", ("lora.adalora_init_rank", "lora.adalora_warmup", "lora.adalora_final"),
         'lora.algorithm = "adalora"'),
        (lc.algorithm != "lokr", ("lora.lokr_factor",), 'lora.algorithm = "lokr"'),
        (lc.algorithm != "lora", ("lora.dora", "lora.rslora", "optimizer.loraplus_ratio", "lora.init_from"),
         'lora.algorithm = "lora"'),
        (lc.targets != "full", ("lora.conv_rank", "lora.conv_alpha"), "training the convolutions"),
        (not lc.train_text_encoder, ("optimizer.text_encoder_lr",), "training the text encoder"),
        (not lc.ema_decay, ("sampling.use_ema",), "lora.ema_decay above 0"),
        (loss.type not in ("huber", "smooth_l1"), ("loss.huber_c", "loss.huber_schedule"),
         'loss.type = "huber" or "smooth_l1"'),
        (not loss.multires_noise_iterations, ("loss.multires_noise_discount",), "loss.multires_noise_iterations"),
        (cfg.schedule.lr_scheduler != "cosine_with_restarts", ("schedule.num_cycles",),
         'schedule.lr_scheduler = "cosine_with_restarts"'),
        (not s.every_n_steps, ("sampling.at_start", "sampling.negative_prompt", "sampling.seed", "sampling.steps",
                               "sampling.sampler", "sampling.guidance_scale", "sampling.width", "sampling.height",
                               "sampling.use_ema"), "sampling.every_n_steps above 0"),
        (not cfg.validation.every_n_steps, ("validation.timesteps",), "validation.every_n_steps above 0"),
    ]
    inactive: dict[str, str] = {}
    for idle, keys, needs in rules:
        for key in keys if idle else ():
            inactive.setdefault(key, f"has no effect without {needs}")
    return inactive
