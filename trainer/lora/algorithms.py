"""Adapter algorithms as peft configs, and the per-module scale that an exported file must carry.

- lora: plain low-rank update B·A (optionally DoRA).
- loha: LyCORIS LoHa, (W1a·W1b) ⊙ (W2a·W2b): rank r reaches an effective rank up to r², same file size
  as LoRA at rank r.
- lokr: LyCORIS LoKr, W1 ⊗ W2 (Kronecker product): very small files; kohya/LyCORIS users pick it for styles.

All three come from peft (LoraConfig / LoHaConfig / LoKrConfig), whose LoHa/LoKr parameters follow
LyCORIS' own shapes, so the exported tensors are the trained ones, renamed (trainer.export.kohya).
Conv layers use the flattened (non-Tucker) form: that is LyCORIS' default and every UI reads it.
"""

from __future__ import annotations

import math
import re

import torch
from peft import LoHaConfig, LoKrConfig, LoraConfig

from trainer.lora import ADAPTER, PARAM_PREFIXES  # noqa: F401  (re-exported: the names adapters live under)


def peft_config(lc, target_regex: str, conv_regex: str | None = None, blocks: dict[str, str] | None = None):
    """The peft config for `lc` (trainer.shared.config.LoraConfig) on the modules matched by `target_regex`.

    `blocks` (the family's block groups, path prefixes in config order) is given for the denoiser: its
    groups get lc.block_ranks / block_alphas, and the modules `conv_regex` matches get lc.conv_rank /
    lc.conv_alpha where those are set (kohya's conv_dim)."""
    common = dict(r=lc.rank, target_modules=target_regex)
    if blocks:
        ranks, alphas = rank_patterns(lc, conv_regex, blocks)
        if ranks:
            common.update(rank_pattern=ranks, alpha_pattern=alphas)
    if lc.algorithm == "adalora":
        from trainer.lora.adalora import adalora_config

        # a placeholder length: trainer.lora.adalora.AdaLoraBudget sets the run's own once the data is read
        return adalora_config(lc, target_regex, 1000)
    if lc.algorithm == "loha":
        # init_weights=True zeroes W2b, lokr's zeroes W1: step 0 reproduces the base model (baseline samples)
        return LoHaConfig(alpha=lc.alpha, rank_dropout=lc.dropout, use_effective_conv2d=False,
                          init_weights=True, **common)
    if lc.algorithm == "lokr":
        return LoKrConfig(alpha=lc.alpha, rank_dropout=lc.dropout, use_effective_conv2d=False,
                          decompose_both=False, decompose_factor=lc.lokr_factor, init_weights=True, **common)
    return LoraConfig(lora_alpha=lc.alpha, lora_dropout=lc.dropout, use_dora=lc.dora, use_rslora=lc.rslora,
                      init_lora_weights=True, **common)


def rank_patterns(lc, conv_regex: str | None, blocks: dict[str, str]) -> tuple[dict[str, int], dict[str, float]]:
    """peft rank_pattern / alpha_pattern (regexes matched against module paths, first match wins, so the
    more specific conv entry of each block comes before the block's own).

    A block's convolutions take conv_rank/conv_alpha when set, else the block's rank/alpha (kohya's
    conv_dim applies to every block alike); without block_ranks the blocks take lora.rank/alpha."""
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    for index, prefix in enumerate(blocks.values()):
        rank = lc.block_ranks[index] if lc.block_ranks else lc.rank
        alpha = lc.block_alphas[index] if lc.block_alphas else lc.alpha
        if conv_regex and (lc.conv_rank or lc.conv_alpha or lc.block_ranks or lc.block_alphas):
            conv = f"{prefix}(?:{conv_regex})"
            ranks[conv], alphas[conv] = lc.conv_rank or rank, lc.conv_alpha or alpha
        if lc.block_ranks or lc.block_alphas:
            ranks[f"{prefix}.*"], alphas[f"{prefix}.*"] = rank, alpha
    return ranks, alphas


def block_lr_groups(cfg, groups: list[dict], unet: torch.nn.Module, blocks: dict[str, str]) -> list[dict]:
    """optimizer.block_lr: each UNet parameter group split by block, at lr x that block's multiplier
    (the LR schedules scale every group alike, so the ratios hold throughout)."""
    multipliers = cfg.optimizer.block_lr
    if not multipliers:
        return groups
    block_of = {id(p): block for n, p in unet.named_parameters() for block, prefix in blocks.items()
                if re.match(prefix, n)}
    out = []
    for group in groups:
        if not group["name"].startswith("unet"):
            out.append(group)
            continue
        for index, block in enumerate(blocks):
            params = [p for p in group["params"] if block_of.get(id(p)) == block]
            if params:
                out.append(dict(group, params=params, lr=group["lr"] * multipliers[index],
                                name=f"{group['name']}_{block}"))
    return out


def exported_alpha(alpha: float, rank: int, rslora: bool) -> float:
    """The alpha a file must carry for the UIs' alpha/rank to equal the trained scale (rsLoRA: alpha/sqrt(rank))."""
    return alpha * math.sqrt(rank) if rslora else alpha


def module_scales(model: torch.nn.Module) -> dict[str, tuple[int, float]]:
    """{module path: (rank, scale)} for every adapted module, as peft applies them during training.

    The UIs compute a module's scale as alpha / rank from the file, so the exported alpha is rank * scale:
    it reproduces the trained update whatever peft's formula was (alpha/r, or alpha/sqrt(r) for rsLoRA).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer) and ADAPTER in getattr(module, "scaling", {}):
            scale = float(module.scaling[ADAPTER])
            if hasattr(module, "ranknum"):  # AdaLoRA layers divide by their starting rank, held in ranknum
                scale /= float(module.ranknum[ADAPTER]) + 1e-5
            out[name] = (int(module.r[ADAPTER]), scale)
    return out


def lora_up_ids(models: list[torch.nn.Module]) -> frozenset[int]:
    """ids of the LoRA B (up) matrices: the parameters LoRA+ trains faster."""
    return frozenset(id(p) for m in models for n, p in m.named_parameters() if ".lora_B." in n)
