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

import torch
from peft import LoHaConfig, LoKrConfig, LoraConfig

ADAPTER = "default"
# the name prefixes of trainable adapter parameters, one per algorithm
PARAM_PREFIXES = ("lora_", "hada_", "lokr_")


def peft_config(lc, target_regex: str, conv_regex: str | None = None):
    """The peft config for `lc` (trainer.config.LoraConfig) on the modules matched by `target_regex`;
    modules matched by `conv_regex` get lc.conv_rank / lc.conv_alpha where those are set (kohya's conv_dim)."""
    common = dict(r=lc.rank, target_modules=target_regex)
    if conv_regex and (lc.conv_rank or lc.conv_alpha):
        common.update(rank_pattern={conv_regex: lc.conv_rank or lc.rank},
                      alpha_pattern={conv_regex: lc.conv_alpha or lc.alpha})
    if lc.algorithm == "loha":
        # init_weights=True zeroes W2b, lokr's zeroes W1: step 0 reproduces the base model (baseline samples)
        return LoHaConfig(alpha=lc.alpha, rank_dropout=lc.dropout, use_effective_conv2d=False,
                          init_weights=True, **common)
    if lc.algorithm == "lokr":
        return LoKrConfig(alpha=lc.alpha, rank_dropout=lc.dropout, use_effective_conv2d=False,
                          decompose_both=False, decompose_factor=lc.lokr_factor, init_weights=True, **common)
    return LoraConfig(lora_alpha=lc.alpha, lora_dropout=lc.dropout, use_dora=lc.dora, use_rslora=lc.rslora,
                      init_lora_weights=True, **common)


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
            out[name] = (int(module.r[ADAPTER]), float(module.scaling[ADAPTER]))
    return out


def lora_up_ids(models: list[torch.nn.Module]) -> frozenset[int]:
    """ids of the LoRA B (up) matrices: the parameters LoRA+ trains faster."""
    return frozenset(id(p) for m in models for n, p in m.named_parameters() if ".lora_B." in n)
