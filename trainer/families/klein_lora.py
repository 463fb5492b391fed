"""FLUX.2 klein LoRA files: `diffusion_model.` + BFL names with the double blocks' q/k/v fused, lora_A/lora_B,
alpha folded, no `.alpha` (trainer/models/flux2_layout.py has the rules and their sources), and the way back to
diffusers' split modules for the diffusers/PEFT export and for `generate`.

InvokeAI files a BFL-named LoRA under FLUX.2 rather than FLUX.1 only when its shapes say so
(invokeai/backend/model_manager/configs/lora.py, `_is_flux2_lora_state_dict`, keys in file order): an
`img_attn.proj` whose input is not FLUX.1's 3072 (klein 9B), a `txt_in`/`vector_in` of Qwen3's widths, or, at
3072 (klein 4B), an `img_mlp.0` whose output is not FLUX.1's 4 x 3072. A 4B LoRA without those layers is filed
as FLUX.1 and cannot be used with klein, so our export adds all-zero ones where they are missing.
"""

from __future__ import annotations

import torch

from trainer.models import flux2_layout, fused_layout

FLUX1_HIDDEN, FLUX1_MLP_RATIO = 3072, 4
QWEN3_CONTEXT_IN, QWEN3_VECTOR_IN = {7680, 12288}, {2560, 4096}  # klein 4B / 9B: 3 x and 1 x Qwen3's width
# what InvokeAI reads to tell FLUX.2 from FLUX.1: the BFL layer and the diffusers layer it is
INVOKEAI_MARKERS = {"double_blocks.0.img_attn.proj": "transformer_blocks.0.attn.to_out.0",
                    "double_blocks.0.img_mlp.0": "transformer_blocks.0.ff.linear_in"}


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
    out = {k: v.to(dtype).contiguous() for k, v in flux2_layout.lora_export(pieces, out_features(config)).items()}
    return with_invokeai_markers(out, config)


def with_invokeai_markers(tensors: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """The file, plus all-zero layers on the markers InvokeAI needs to file it as FLUX.2 (they change no
    weight in any UI; at the file's smallest rank, so they add no rank of their own) when the file would be
    filed as FLUX.1 without them."""
    if invokeai_files_as_flux2({k: tuple(v.shape) for k, v in tensors.items()}):
        return tensors
    widths, dtype = out_features(config), next(iter(tensors.values())).dtype
    rank = min(v.shape[0] for k, v in tensors.items() if k.endswith("lora_A.weight"))
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    out = dict(tensors)
    for bfl, module in INVOKEAI_MARKERS.items():
        name = flux2_layout.LORA_PREFIX + bfl
        if f"{name}.lora_A.weight" not in out:
            out[f"{name}.lora_A.weight"] = torch.zeros(rank, hidden, dtype=dtype)
            out[f"{name}.lora_B.weight"] = torch.zeros(widths[module], rank, dtype=dtype)
    return out


def invokeai_files_as_flux2(shapes: dict[str, tuple]) -> bool:
    """Whether InvokeAI files a BFL-named LoRA ({key: shape}, in file order) under FLUX.2 (module docstring)."""
    hidden = None
    for key, shape in shapes.items():
        if not key.startswith(flux2_layout.LORA_PREFIX) or not key.endswith("lora_A.weight") or len(shape) != 2:
            continue  # (a misshapen tensor is verify's own finding)
        if key.endswith(".img_attn.proj.lora_A.weight"):
            hidden = shape[1]
            if hidden != FLUX1_HIDDEN:
                return True
        elif "txt_in" in key:
            return shape[1] in QWEN3_CONTEXT_IN
        elif "vector_in" in key:
            return shape[1] in QWEN3_VECTOR_IN
    mlp = next((s for k, s in shapes.items()
                if k.startswith(flux2_layout.LORA_PREFIX) and k.endswith(".img_mlp.0.lora_B.weight")), None)
    return hidden == FLUX1_HIDDEN and bool(mlp) and mlp[0] != FLUX1_HIDDEN * FLUX1_MLP_RATIO


def ui_verdicts(shapes: dict[str, tuple]) -> dict[str, tuple[str, str]]:
    """Each UI's verdict on a klein LoRA file: `diffusion_model.` + BFL names, lora_A/lora_B, no `.alpha`
    loads in all four; with `.alpha` InvokeAI says "Unsupported lora format" and diffusers raises; InvokeAI's
    FLUX.1/FLUX.2 rule above; original Forge has no FLUX.2."""
    from trainer.export.ui_rules import ABSENT, REFUSES, UNKNOWN, Verdicts, lora_modules

    modules = lora_modules(shapes)
    verdicts = Verdicts(("comfyui", "forge-neo", "invokeai", "diffusers", "forge"))
    verdicts.add("forge", ABSENT, "has no FLUX.2 (Forge Neo has)")
    if any("alpha" in parts for parts in modules.values()):
        verdicts.add("invokeai", REFUSES, '`.alpha` keys ("Unsupported lora format")')
        verdicts.add("diffusers", REFUSES, "`.alpha` keys (its FLUX.2 loader raises)")
    if not invokeai_files_as_flux2(shapes):
        verdicts.add("invokeai", REFUSES, "filed as FLUX.1: a 4B LoRA needs img_attn.proj and img_mlp.0 layers "
                                          "for InvokeAI to tell it from FLUX.1")
    other = [m for m in modules if not m.startswith(flux2_layout.LORA_PREFIX)]
    if other:
        verdicts.add(("comfyui", "forge-neo", "invokeai", "diffusers"), UNKNOWN,
                     f"{len(other)} layers without the diffusion_model. prefix, e.g. {other[0]}")
    return verdicts.result()


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
