"""kohya layout -> diffusers/PEFT layout (`pytorch_lora_weights.safetensors`), and rank resizing by SVD.

The diffusers layout names modules as the model classes do (`unet.down_blocks...to_q.lora_A.weight`,
`text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight`) and carries no alpha: the
kohya scale alpha/rank is folded into lora_B so the file means the same thing in any loader.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from trainer.export.kohya import lycoris_algorithm
from trainer.export.verify import base_config_of, module_table
from trainer.families.registry import by_config
from trainer.shared.errors import UserError

PARTS = ("lora_down.weight", "lora_up.weight", "alpha", "dora_scale")
# the PEFT names some families' files use (alpha folded into B, no `.alpha`): read as down/up
PEFT_PARTS = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}


def group_modules(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{kohya module name: {part: tensor}} for the parts in PARTS (lora_A/lora_B given as down/up)."""
    modules: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, tensor in tensors.items():
        for part in (*PARTS, *PEFT_PARTS):
            if key.endswith("." + part):
                modules[key[: -len(part) - 1]][PEFT_PARTS.get(part, part)] = tensor
                break
    return dict(modules)


def scale_of(parts: dict[str, torch.Tensor]) -> float:
    rank = parts["lora_down.weight"].shape[0]
    alpha = float(parts["alpha"]) if "alpha" in parts else float(rank)
    return alpha / rank


def refuse_lycoris(tensors: dict[str, torch.Tensor], what: str) -> None:
    algorithm = lycoris_algorithm(tensors)
    if algorithm:
        raise UserError(f"this is a {algorithm.upper()} adapter (LyCORIS layout); {what} supports plain LoRA only",
                        "use the kohya-layout file as it is: A1111, Forge, ComfyUI and InvokeAI load LoHa/LoKr")


def kohya_to_diffusers(tensors: dict[str, torch.Tensor], metadata: dict, text_encoders: bool = False,
                       ) -> dict[str, torch.Tensor]:
    """`text_encoders`: keep text-encoder modules even where the family's diffusers files cannot carry them
    (`generate` loads the result itself; an exported file must load in every UI)."""
    refuse_lycoris(tensors, "the diffusers layout export")
    config = base_config_of(metadata)
    family = by_config(config)
    table = module_table(config, family.id)
    denoiser_config = family.denoiser_config(config)
    out = {}
    for name, parts in group_modules(tensors).items():
        if "dora_scale" in parts:
            raise UserError(f"{name} is a DoRA module; the diffusers layout export supports plain LoRA only",
                            "export with --format kohya, which every UI and diffusers read")
        target = table[name]
        if target.component != "unet" and not (family.diffusers_text_encoders or text_encoders):
            raise UserError(f"this {family.label} LoRA trains a text encoder ({name}), which the diffusers layout "
                            "cannot carry (InvokeAI and diffusers refuse text-encoder keys in it)",
                            "export it with --format kohya: every UI, diffusers too, applies that file whole")
        dtype = parts["lora_up.weight"].dtype
        up = parts["lora_up.weight"].float() * scale_of(parts)
        for module, down, piece_up in family.diffusers_pieces(target, parts["lora_down.weight"], up,
                                                              denoiser_config):
            module = module if target.component == "unet" else _with_text_model(module)
            prefix = f"{family.diffusers_prefix(target.component)}.{module}"
            out[f"{prefix}.lora_A.weight"] = down.contiguous()
            out[f"{prefix}.lora_B.weight"] = piece_up.to(dtype).contiguous()
    return out


def _with_text_model(module: str) -> str:
    # transformers 5 flattened CLIPTextModel; files in the wild (and diffusers' loader) use text_model.*
    return module if module.startswith("text_model.") else "text_model." + module


def resize_rank(tensors: dict[str, torch.Tensor], rank: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Lower every module to `rank` by truncated SVD of its update; returns (tensors, retained energy)."""
    out, energy = {}, {}
    for name, parts in group_modules(tensors).items():
        down, up = parts["lora_down.weight"], parts["lora_up.weight"]
        dtype = down.dtype
        delta = up.float().flatten(1) @ down.float().flatten(1) * scale_of(parts)   # (out, in*k*k)
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        keep = min(rank, s.numel())
        root = s[:keep].sqrt()
        new_up = (u[:, :keep] * root).reshape(up.shape[0], keep, *up.shape[2:])
        new_down = (root[:, None] * vh[:keep]).reshape(keep, *down.shape[1:])
        total = float((s ** 2).sum())
        energy[name] = float((s[:keep] ** 2).sum()) / total if total > 0 else 1.0
        out[f"{name}.lora_down.weight"] = new_down.to(dtype).contiguous()
        out[f"{name}.lora_up.weight"] = new_up.to(dtype).contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(keep), dtype=dtype)   # scale 1: folded into the factors
        if "dora_scale" in parts:
            out[f"{name}.dora_scale"] = parts["dora_scale"]
    return out, energy
