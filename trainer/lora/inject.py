"""Put adapter layers (LoRA, DoRA, LoHa, LoKr: trainer.lora.algorithms) on the chosen modules with peft,
and read/write their weights.

Target sets, by the names of diffusers' UNet modules:
- attention:     self- and cross-attention projections (to_q, to_k, to_v, to_out.0)
- attention+ff:  + the transformer blocks' feed-forward (ff.net) and proj_in/proj_out — kohya's default set
- full:          + resnet convolutions, time-embedding projections, down/up-sampler convolutions (LoCon)
Text encoders (when trained): q/k/v/out_proj and the MLP's fc1/fc2 in every layer.
"""

from __future__ import annotations

import torch
from peft import get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict

from trainer.lora.algorithms import ADAPTER, PARAM_PREFIXES

_ATTENTION = r".*\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)"
_FF = r".*\.ff\.net\.(0\.proj|2)|.*attentions\.\d+\.(proj_in|proj_out)"
_CONV = r".*resnets\.\d+\.(conv1|conv2|conv_shortcut|time_emb_proj)|.*(downsamplers|upsamplers)\.0\.conv"
# kohya's conv_dim/conv_alpha apply to the 3x3 convolutions only; 1x1 ones (conv_shortcut) take the linear rank
UNET_CONV_3X3 = r".*resnets\.\d+\.(conv1|conv2)|.*(downsamplers|upsamplers)\.0\.conv"
UNET_TARGETS = {
    "attention": f"^({_ATTENTION})$",
    "attention+ff": f"^({_ATTENTION}|{_FF})$",
    "full": f"^({_ATTENTION}|{_FF}|{_CONV})$",
}
TEXT_ENCODER_TARGETS = r"^.*\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))$"


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
