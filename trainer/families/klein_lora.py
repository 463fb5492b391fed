"""FLUX.2 klein LoRA files: `diffusion_model.` + BFL names with the double blocks' q/k/v fused, lora_A/lora_B,
alpha folded, no `.alpha` (trainer/models/flux2_layout.py has the rules and their sources), and the way back to
diffusers' split modules for the diffusers/PEFT export and for `generate`.
"""

from __future__ import annotations

import functools
import json

import torch

from trainer.models import flux2_layout


@functools.lru_cache(maxsize=4)
def _out_features(config_json: str) -> dict[str, int]:
    """Each diffusers linear's output width, from the transformer built on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import Flux2Transformer2DModel

    with init_empty_weights():
        model = Flux2Transformer2DModel.from_config(json.loads(config_json))
    return {name: m.out_features for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def out_features(config: dict) -> dict[str, int]:
    return _out_features(json.dumps(dict(config), sort_keys=True, default=str))


def export(adapters: dict, config: dict, scales: dict, dtype) -> dict[str, torch.Tensor]:
    """{"unet": peft state} -> the klein file (the family trains the transformer only)."""
    state = adapters["unet"]
    modules = sorted({k.rsplit(".", 2)[0] for k in state if k.endswith("lora_A.weight")})
    pieces = {m: (state[f"{m}.lora_A.weight"].float(), state[f"{m}.lora_B.weight"].float(), scales["unet"][m][1])
              for m in modules}
    return {k: v.to(dtype).contiguous() for k, v in flux2_layout.lora_export(pieces, out_features(config)).items()}


def targets(components: dict) -> dict[str, tuple]:
    """{file module: ("unet", BFL module, "Linear", fused weight shape)} of every layer a klein LoRA can hold
    (the final modulation left out: diffusers and ComfyUI read its rows in different orders)."""
    shapes = {k: tuple(v.shape) for k, v in components["unet"].state_dict().items()}
    out = {}
    for key, shape in flux2_layout.to_original(shapes).items():
        module = key.removesuffix(".weight")
        if key.endswith(".weight") and len(shape) == 2 and module != flux2_layout.FINAL_MOD[0]:
            out[flux2_layout.LORA_PREFIX + module] = ("unet", module, "Linear", shape)
    return out


def diffusers_pieces(target, down: torch.Tensor, up: torch.Tensor) -> list:
    """(diffusers module, down, up) of one file module, scale folded into up already: a fused qkv's up rows go
    to their piece with only the down rows they use (exact; untrained columns dropped)."""
    split = flux2_layout.lora_read({f"{target.module}.lora_A.weight": down, f"{target.module}.lora_B.weight": up})
    pieces = []
    for module, (piece_down, piece_up, _) in split.items():
        used = piece_up.abs().sum(dim=0) != 0
        if not used.any():
            used[:1] = True
        pieces.append((module, piece_down[used], piece_up[:, used]))
    return pieces


def peft_state(tensors: dict) -> dict[str, torch.Tensor]:
    """Any klein LoRA file -> PEFT state of the diffusers transformer, alpha folded (for `generate`)."""
    out = {}
    for module, (down, up, scale) in flux2_layout.lora_read(tensors).items():
        out[f"{module}.lora_A.weight"] = down
        out[f"{module}.lora_B.weight"] = up if scale == 1 else up * scale
    return out
