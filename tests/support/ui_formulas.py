"""How the UIs turn a kohya/LyCORIS module's tensors into a weight update, written from A1111's
extensions-builtin/Lora/network_{lora,hada,lokr}.py and ComfyUI's weight adapters (the reference the
export is checked against; kept apart from the engine's code on purpose)."""

from __future__ import annotations

import torch


def ui_delta(parts: dict[str, torch.Tensor], weight_shape: tuple) -> torch.Tensor:
    parts = {k: v.float() for k, v in parts.items()}
    alpha = float(parts["alpha"]) if "alpha" in parts else None
    if "lora_down.weight" in parts:
        down, up = parts["lora_down.weight"], parts["lora_up.weight"]
        delta, dim = up.flatten(1) @ down.flatten(1), down.shape[0]
    elif "hada_w1_a" in parts:
        delta = (parts["hada_w1_a"] @ parts["hada_w1_b"]) * (parts["hada_w2_a"] @ parts["hada_w2_b"])
        dim = parts["hada_w1_b"].shape[0]
    else:
        delta, dim = _lokr(parts), None
        for key in ("lokr_w1_b", "lokr_w2_b"):  # A1111: the last decomposed factor's rank; none = scale 1
            if key in parts:
                dim = parts[key].shape[0]
    scale = alpha / dim if alpha is not None and dim else 1.0
    return (delta * scale).reshape(weight_shape)


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
