"""Scaled fp8 files: an fp8 weight stored with a scale beside it (`X.weight_scale`, BFL's and diffusers'
spelling, or ComfyUI's older `X.scale_weight`), the real weight being the fp8 tensor times the scale (a scalar
or one value per output row). BFL ships FLUX.2 klein's fp8 files this way and ComfyUI's "fp8 mixed"/"scaled"
text encoders too: read as plain fp8 they give every layer the wrong magnitude, so the loader must see them.

Where the layer is kept in fp8 (`performance.weight_dtype = "fp8"`), the file's fp8 tensor is kept as it is
and the scale rides on the layer for trainer.models.precision to apply in every forward: no re-quantising, no
loss, the file's memory. Elsewhere the weight is dequantised once, in fp32, into the dtype it is kept in.
`X.input_scale` (activation scales for fp8 matmuls, which we do not run) and ComfyUI's `X.comfy_quant` notes
are dropped.
"""

from __future__ import annotations

import torch

from trainer.models.fused_layout import dequantize
from trainer.models.precision import FP8, SCALE_BUFFER
from trainer.shared.errors import ModelFileError

WEIGHT_SCALES = (".weight_scale", ".scale_weight")
DROPPED = (".input_scale", ".scale_input", ".comfy_quant")


def is_sidecar(key: str) -> bool:
    return key.endswith(WEIGHT_SCALES + DROPPED)


def read_dtype(key: str, kept: torch.dtype) -> torch.dtype:
    """Scales are read in fp32 (a bf16 scale would round every weight of its layer the same wrong way)."""
    return torch.float32 if key.endswith(WEIGHT_SCALES) else kept


def take_weight_scales(state: dict, name: str) -> dict[str, torch.Tensor]:
    """Remove every sidecar from `state` (model keys -> tensors, weights already in the dtype they are kept
    in); dequantise the weights kept in a wider dtype; return {module: scale} for the weights kept in fp8."""
    for key in [k for k in state if k.endswith(DROPPED)]:
        state.pop(key)
    kept = {}
    for key in [k for k in state if k.endswith(WEIGHT_SCALES)]:
        scale, module = state.pop(key), key.rsplit(".", 1)[0]
        weight = state.get(f"{module}.weight")
        if weight is None:
            raise ModelFileError(f"the {name} has a weight scale {key} without its weight",
                                 "the file is damaged or of another architecture: get the full model file")
        if weight.dtype == FP8:
            kept[module] = scale
            continue
        try:
            state[f"{module}.weight"] = dequantize(weight, scale, weight.dtype)
        except ValueError as err:
            raise ModelFileError(f"the {name}'s {key}: {err}", "use the bf16 file, or a per-tensor scaled fp8 "
                                 "copy, with performance.weight_dtype = \"fp8\"") from err
    return kept


def attach_weight_scales(model: torch.nn.Module, scales: dict[str, torch.Tensor]) -> None:
    """After the weights are assigned: each fp8 layer carries its scale (precision.enable_fp8_compute takes it)."""
    for module, scale in scales.items():
        model.get_submodule(module).register_buffer(SCALE_BUFFER, scale, persistent=False)
