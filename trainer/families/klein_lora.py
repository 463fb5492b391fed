"""FLUX.2 klein LoRA files: `diffusion_model.` + BFL names with the double blocks' q/k/v fused, lora_A/lora_B,
alpha folded, no `.alpha` (trainer/models/flux2_layout.py has the rules and their sources), and the way back to
diffusers' split modules for the diffusers/PEFT export and for `generate`.
"""

from __future__ import annotations

import torch

from trainer.models import flux2_layout, fused_layout


def out_features(config: dict) -> dict[str, int]:
    return fused_layout.linear_widths("Flux2Transformer2DModel", config)


def merge_slot(module: str, config: dict) -> tuple[str, object]:
    """(BFL key of a diffusers module's weight, its (first, end) rows in a fused qkv or None) for merge."""
    from trainer.shared.errors import UserError

    try:
        slot = flux2_layout.lora_slots([module], out_features(config))[module]
    except ValueError as exc:  # the final modulation (rows ordered differently) or no such linear layer
        raise UserError(f"merge cannot bake {module} into a FLUX.2 klein file: {exc}",
                        "use the LoRA at generation time") from None
    rows = None if slot.rows is None else (slot.row_offset, slot.row_offset + slot.rows)
    return slot.kohya.removeprefix(flux2_layout.LORA_PREFIX) + ".weight", rows


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
