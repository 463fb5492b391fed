"""Put adapter layers (LoRA, DoRA, LoHa, LoKr: trainer.lora.algorithms) on the chosen modules with peft,
and read/write their weights. Which modules: the family's target sets (trainer.families.base.LoraTargets).
"""

from __future__ import annotations

import torch
from peft import get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict

from trainer.lora import ADAPTER, PARAM_PREFIXES


def inject(model: torch.nn.Module, config) -> list[torch.nn.Parameter]:
    """Add the adapter (a peft LoraConfig/LoHaConfig/LoKrConfig) in place; return its trainable parameters
    (everything else stays frozen)."""
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    params = [p for n, p in model.named_parameters() if any(part.startswith(PARAM_PREFIXES) for part in n.split("."))]
    for p in params:
        p.requires_grad_(True)
    if not params:
        raise RuntimeError("LoRA matched no modules: the target pattern does not fit this model")
    return params


def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """peft-layout weights: `<module>.lora_A.weight`, `.lora_B.weight`, `.lora_magnitude_vector`."""
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER).items()}


def load_adapter_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise RuntimeError(f"adapter weights do not fit the model: {unexpected[:3]}")


def set_adapter_scale(model: torch.nn.Module, enabled: bool) -> None:
    """Switch the adapter off/on (used to check the base model's output, e.g. in tests)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(enabled)
