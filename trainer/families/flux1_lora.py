"""FLUX.1 LoRA files in the layouts every UI applies (measured in ComfyUI, Forge, InvokeAI and diffusers):

- kohya with BFL names, blocks only: `lora_unet_double_blocks_N_img_attn_qkv`, `…_single_blocks_N_linear1`,
  `.lora_down/.lora_up/.alpha`, CLIP-L as `lora_te1_…`. The BFL layout fuses q/k/v (and q/k/v/mlp in single
  blocks), so the pieces we train on diffusers' split layers are stacked: down = the pieces' downs
  concatenated, up = their ups block-diagonal (trainer/models/bfl_layout.fuse_lora): exact.
- diffusers/PEFT (`transformer.transformer_blocks.N.attn.to_q.lora_A/lora_B`), alpha folded into B, no
  `.alpha` and no text-encoder keys (with either, some UIs refuse the file); a fused layer splits back into
  its pieces exactly (each piece keeps the columns its rows use).

What the UIs do with other files (`ui_verdicts`, for verify): a LoRA on the embedders (`img_in`, `txt_in`,
`time_in`, `vector_in`, `guidance_in`) or `final_layer` makes InvokeAI refuse the whole file and diffusers
drop those layers; so do T5 keys; InvokeAI recognises the diffusers layout only by
`single_transformer_blocks.0.attn.to_q` and `transformer_blocks.0.attn.add_q_proj`; with a
`diffusion_model.` prefix and lora_A/lora_B (BFL names) diffusers applies nothing.
"""

from __future__ import annotations

import re

import torch

from trainer.export.ui_rules import REFUSES, UNKNOWN, Verdicts
from trainer.shared.errors import UserError

UIS = ("comfyui", "forge", "invokeai", "diffusers")
KOHYA, PEFT, PREFIXED = ("lora_unet_", "lora_te1_", "lora_te2_"), ("transformer.", "text_encoder.", "text_encoder_2."), \
    "diffusion_model."
EMBEDDERS = re.compile(r"^(lora_unet_|diffusion_model\.)(img_in|txt_in|time_in|vector_in|guidance_in|final_layer)")
T5 = ("lora_te2_", "text_encoder_2.")
INVOKEAI_PEFT_MARKERS = ("transformer.single_transformer_blocks.0.attn.to_q",
                         "transformer.transformer_blocks.0.attn.add_q_proj")


def hidden_size(config: dict) -> int:
    return config["num_attention_heads"] * config["attention_head_dim"]


def kohya_module(component: str, module: str, config: dict | None) -> str:
    if component == "unet":
        from trainer.models.bfl_layout import kohya_bfl_lora_names

        return kohya_bfl_lora_names([module], hidden_size(config))[module].kohya
    module = module if module.startswith("text_model.") else "text_model." + module
    return "lora_te1_" + module.replace(".", "_")   # CLIP-L; T5 is never trained (no UI applies it)


def to_kohya_bfl(family, adapters: dict, config: dict, scales: dict, dtype) -> dict[str, torch.Tensor]:
    """{component: peft state} -> kohya BFL tensors; plain LoRA only (FLUX's check_config says so)."""
    from trainer.models.bfl_layout import fuse_lora, kohya_bfl_lora_names

    out: dict[str, torch.Tensor] = {}
    for component, state in adapters.items():
        modules = sorted({k.rsplit(".", 2)[0] for k in state if k.endswith("lora_A.weight")})
        if component != "unet":
            for module in modules:
                rank, scale = scales[component][module]
                _put(out, kohya_module(component, module, config), state[f"{module}.lora_A.weight"],
                     state[f"{module}.lora_B.weight"], rank * scale, dtype)
            continue
        slots = kohya_bfl_lora_names(modules, hidden_size(config))
        fused: dict[str, list] = {}
        for module in modules:
            fused.setdefault(slots[module].kohya, []).append(
                (slots[module], state[f"{module}.lora_A.weight"].float(), state[f"{module}.lora_B.weight"].float(),
                 scales[component][module][1]))
        for name, pieces in fused.items():
            down, up, alpha = fuse_lora(pieces)
            _put(out, name, down, up, alpha, dtype)
    return out


def _put(out: dict, name: str, down, up, alpha: float, dtype) -> None:
    out[f"{name}.lora_down.weight"] = down.to(dtype).contiguous()
    out[f"{name}.lora_up.weight"] = up.to(dtype).contiguous()
    out[f"{name}.alpha"] = torch.tensor(float(alpha))


def kohya_targets(components: dict) -> dict[str, tuple]:
    """{kohya module: (component, module, kind, weight shape)} of every LoRA-able FLUX layer: the BFL layers of
    the transformer (fused shapes) and CLIP-L's linear layers."""
    from trainer.models.bfl_layout import diffusers_to_bfl, kohya_name

    shapes = {k: tuple(v.shape) for k, v in components["unet"].state_dict().items()}
    out = {}
    for key, shape in diffusers_to_bfl(shapes).items():
        if key.endswith(".weight") and len(shape) == 2:
            module = key.removesuffix(".weight")
            out[kohya_name(module)] = ("unet", module, "Linear", shape)
            out[PREFIXED + module] = ("unet", module, "Linear", shape)  # ComfyUI/Forge/InvokeAI read these too
    for key, shape in shapes.items():  # the diffusers/PEFT layout's names
        if key.endswith(".weight") and len(shape) == 2:
            module = key.removesuffix(".weight")
            out["transformer." + module] = ("unet", module, "Linear", shape)
    for name, module in components["text_encoder"].named_modules():
        if isinstance(module, torch.nn.Linear):
            target = ("text_encoder", name, "Linear", tuple(module.weight.shape))
            out[kohya_module("text_encoder", name, None)] = target
            out["text_encoder." + (name if name.startswith("text_model.") else "text_model." + name)] = target
    return out


def diffusers_pieces(target, down: torch.Tensor, up: torch.Tensor, config: dict) -> list[tuple[str, object, object]]:
    """(diffusers module, down, up) of one kohya BFL module, scale already folded into up: a fused layer's up
    rows go to their piece with the down rows those rows use (exact; zero columns dropped)."""
    from trainer.models.bfl_layout import links

    if target.component != "unet":
        return [(target.module, down, up)]
    link = next((one for one in links(64, 64, True) if one.bfl == target.module), None)  # deep enough for any model
    if link is None:  # a module of the diffusers/PEFT layout already
        return [(target.module, down, up)]
    sizes = [hidden_size(config) * (4 if p.endswith("proj_mlp") else 1) for p in link.parts] \
        if len(link.parts) > 1 else [up.shape[0]]
    if link.swap:  # final_layer: BFL rows shift|scale, diffusers scale|shift
        up = torch.cat(list(up.chunk(2, dim=0))[::-1], dim=0)
    pieces, start = [], 0
    for part, rows in zip(link.parts, sizes):
        piece_up = up[start:start + rows]
        used = piece_up.abs().sum(dim=0) != 0
        if not used.any():
            used[:1] = True  # an all-zero piece (untrained): keep one column, it adds nothing
        pieces.append((part, down[used], piece_up[:, used]))
        start += rows
    return pieces


def bfl_rows(component: str, module: str, config: dict) -> tuple[str, object]:
    """(BFL key of a diffusers module's weight, its (first, end) rows in a fused weight or None) for merge."""
    from trainer.models.bfl_layout import kohya_bfl_lora_names, links

    if component != "unet":
        raise UserError("merge writes FLUX.1's transformer file; this LoRA also trains CLIP-L, which lives in "
                        "clip_l.safetensors", "use the LoRA at generation time, or train it without the text "
                        "encoder to bake it")
    slot = kohya_bfl_lora_names([module], hidden_size(config))[module]
    link = next(one for one in links(64, 64, True) if module in one.parts)
    if slot.swap:
        raise UserError(f"merge does not bake FLUX.1's final layer ({module})", "use the LoRA at generation time")
    rows = None if slot.rows is None else (slot.row_offset, slot.row_offset + slot.rows)
    return f"{link.bfl}.weight", rows


def ui_verdicts(shapes: dict[str, tuple]) -> dict[str, tuple[str, str]]:
    """Each UI's verdict on a FLUX.1 LoRA file of any layout (the rules in the module docstring)."""
    from trainer.export.ui_rules import lora_modules

    modules = lora_modules(shapes)
    verdicts = Verdicts(UIS)
    other = [m for m in modules if not m.startswith((*KOHYA, *PEFT, PREFIXED))]
    if other:
        verdicts.add(UIS, UNKNOWN, f"{len(other)} layers in a layout not measured, e.g. {other[0]}")
    embedders = [m for m in modules if EMBEDDERS.match(m)]
    if embedders:
        verdicts.add("invokeai", REFUSES, f"LoRA on {', '.join(sorted({EMBEDDERS.match(m)[2] for m in embedders}))} "
                                          "(embedders/final layer)")
        verdicts.drop("diffusers", embedders, "embedders/final layer")
    t5 = [m for m in modules if m.startswith(T5)]
    if t5:
        verdicts.add("invokeai", REFUSES, "T5 LoRA keys")
        verdicts.drop("diffusers", t5, "T5")
    _peft_verdicts(verdicts, {m: parts for m, parts in modules.items() if m.startswith(PEFT)})
    prefixed = [m for m in modules if m.startswith(PREFIXED) and "lora_A.weight" in modules[m]]
    verdicts.drop("diffusers", prefixed, "it applies nothing under a `diffusion_model.` prefix with lora_A/lora_B",
                  PREFIXED)
    return verdicts.result()


def _peft_verdicts(verdicts: Verdicts, modules: dict[str, set[str]]) -> None:
    if not modules:
        return
    if any("alpha" in parts for parts in modules.values()):
        verdicts.add("invokeai", REFUSES, "`.alpha` keys in the diffusers layout")
    if any(m.startswith("text_encoder") for m in modules):
        verdicts.add(("invokeai", "diffusers"), REFUSES, "text-encoder keys in the diffusers layout")
    missing = [m for m in INVOKEAI_PEFT_MARKERS if m not in modules]
    if missing:
        verdicts.add("invokeai", REFUSES, f"not recognised as FLUX without {' and '.join(missing)}")


def diffusers_file_state(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]] | None:
    """{component: PEFT state} of a file already in the diffusers/PEFT layout (our `--format diffusers`,
    ai-toolkit's FLUX LoRAs and ostris' schnell training adapter), a `.alpha` where there is one folded into
    lora_B; None for a file in another layout (kohya)."""
    if not tensors or not all(k.startswith(("transformer.", "text_encoder.")) for k in tensors):
        return None
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.endswith(".alpha"):
            continue
        component, name = key.split(".", 1)
        alpha = tensors.get(key.removesuffix("lora_B.weight") + "alpha") if key.endswith("lora_B.weight") else None
        out.setdefault(component, {})[name] = tensor if alpha is None else \
            tensor.float() * (float(alpha) / tensor.shape[1])
    return out
