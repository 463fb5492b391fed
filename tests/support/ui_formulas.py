"""How each UI turns a kohya/LyCORIS module's tensors into a weight update, and how InvokeAI tells the base
model of a LoRA file before it installs it: the reference the export is checked against, written from the
UIs' own code and kept apart from the engine's on purpose.

Sources (read, not copied):
- A1111: extensions-builtin/Lora/network.py (calc_scale: alpha / dim, 1 without either), network_lora.py,
  network_hada.py, network_lokr.py (dim: w1_b's rank, then w2_b's when w2 is decomposed).
- Forge: backend/patcher/lora.py (ComfyUI's formulas: LoRA alpha / down rank, LoHa alpha / w1_b rank,
  LoKr alpha / the last decomposed factor's rank, w2 over w1).
- ComfyUI: comfy/weight_adapter/{lora,loha,lokr}.py, the same rules as Forge.
- InvokeAI: invokeai/backend/patches/layers/{lora,loha,lokr}_layer.py (scale = alpha / _rank(); LoKr's
  _rank() is w1_b's when w1 is decomposed, else w2_b's, else none: scale 1), and the install probe
  `lora_token_vector_length` in invokeai/backend/model_manager/util/model_util.py with its use in
  invokeai/backend/model_manager/configs/lora.py.
"""

from __future__ import annotations

import re

import torch

UIS = ("a1111", "forge", "comfyui", "invokeai")


def ui_delta(parts: dict[str, torch.Tensor], weight_shape: tuple, ui: str = "comfyui") -> torch.Tensor:
    """The update `ui` adds to a module's weight at strength 1 (DoRA's rescaling aside)."""
    parts = {k: v.float() for k, v in parts.items()}
    alpha = float(parts["alpha"]) if "alpha" in parts else None
    if "lora_down.weight" in parts:
        down, up = parts["lora_down.weight"], parts["lora_up.weight"]
        delta, dim = up.flatten(1) @ down.flatten(1), down.shape[0]
    elif "hada_w1_a" in parts:
        delta = (parts["hada_w1_a"] @ parts["hada_w1_b"]) * (parts["hada_w2_a"] @ parts["hada_w2_b"])
        dim = parts["hada_w1_b"].shape[0]
    else:
        delta, dim = _lokr(parts), _lokr_rank(parts, ui)
    scale = alpha / dim if alpha is not None and dim else 1.0
    return (delta * scale).reshape(weight_shape)


def ui_deltas(parts: dict[str, torch.Tensor], weight_shape: tuple) -> dict[str, torch.Tensor]:
    return {ui: ui_delta(parts, weight_shape, ui) for ui in UIS}


def _lokr_rank(parts: dict[str, torch.Tensor], ui: str) -> int | None:
    # the rank alpha is divided by; with both factors whole there is none and alpha is ignored (scale 1)
    order = ("lokr_w1_b", "lokr_w2_b") if ui == "invokeai" else ("lokr_w2_b", "lokr_w1_b")
    return next((parts[key].shape[0] for key in order if key in parts), None)


def _lokr(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    w1 = parts["lokr_w1"] if "lokr_w1" in parts else parts["lokr_w1_a"] @ parts["lokr_w1_b"]
    w2 = parts["lokr_w2"] if "lokr_w2" in parts else parts["lokr_w2_a"] @ parts["lokr_w2_b"]
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2)


def modules_of(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.endswith((".lora_down.weight", ".lora_up.weight")):
            module, part = key.rsplit(".", 2)[0], ".".join(key.rsplit(".", 2)[1:])
        else:
            module, part = key.rsplit(".", 1)
        out.setdefault(module, {})[part] = tensor
    return out


# InvokeAI's base model by the token-vector length its probe reads (configs/lora.py)
INVOKEAI_BASES = {768: "sd-1", 1024: "sd-2", 1280: "sdxl", 2048: "sdxl"}
_SDXL_UNET_BLOCK = re.compile(r"^lora_unet_(?:(?:down_blocks|up_blocks)_\d+_attentions_\d+|mid_block_attentions_\d+"
                              r"|(?:input_blocks|output_blocks)_\d+_\d+|middle_block_\d+)_transformer_blocks_(\d+)_")


def invokeai_token_vector_length(shapes: dict[str, tuple]) -> int | None:
    """InvokeAI's probe, step for step, over {key: shape} in the order InvokeAI reads the file: the length read
    from the last key seen of a probed layer, stopping at the first that gives one."""
    length = te1 = te2 = None
    for key in shapes:
        if key.startswith("lora_unet_") and ("_attn2_to_k." in key or "_attn2_to_v." in key
                                             or "time_emb_proj.lora_down" in key):
            length = _invokeai_shape_1(key, shapes)
        elif key.startswith("lora_te") and "_self_attn_" in key:
            found = _invokeai_shape_1(key, shapes)
            if key.startswith("lora_te_"):
                length = found
            elif key.startswith("lora_te1_"):
                te1 = found
            elif key.startswith("lora_te2_"):
                te2 = found
        if te1 is not None and te2 is not None:
            length = te1 + te2
        if length is not None:
            return length
    return None


def _invokeai_shape_1(key: str, shapes: dict[str, tuple]) -> int | None:
    if "." not in key:
        return None
    module, part = key.split(".", 1)
    if part in ("lora_down.weight", "hada_w1_b", "hada_w2_b", "diff"):
        return shapes[key][1]
    if "lokr_" in part:
        # InvokeAI's fallbacks to the decomposed factors test for `module + "lokr_w1_b"` (no dot), a key that
        # never exists: only a layer that stores both lokr_w1 and lokr_w2 whole gives a length
        w1, w2 = shapes.get(module + ".lokr_w1"), shapes.get(module + ".lokr_w2")
        return w1[1] * w2[1] if w1 is not None and w2 is not None else None
    if part == "weight" and "lora_unet_" not in module:
        return shapes[key][0]   # IA3
    return None


def invokeai_base(shapes: dict[str, tuple]) -> str | None:
    """The base InvokeAI installs a kohya-layout SD LoRA under, or None: it refuses the file."""
    base = INVOKEAI_BASES.get(invokeai_token_vector_length(shapes))
    if base is None and any((m := _SDXL_UNET_BLOCK.match(k)) and int(m[1]) >= 2 for k in shapes):
        return "sdxl"   # UNet-only SDXL files without a probed layer: told by their deep transformer stacks
    return base
