"""peft-layout adapter weights <-> the kohya layout that A1111/Forge, ComfyUI, InvokeAI and diffusers read.

Key rules (taken from kohya sd-scripts' networks/lora.py and checked against the UIs' loaders):
- `lora_unet_<module path, dots as underscores>`, the path and the text encoders' prefixes by the family's
  rules (trainer.families: SD1.x/SD2.x diffusers' UNet names, SDXL the original SGM names;
  `lora_te_…` / SDXL `lora_te1_…`, `lora_te2_…`).
- each module has `.lora_down.weight` (peft lora_A), `.lora_up.weight` (lora_B) and `.alpha` (a 0-d tensor
  holding the trained alpha; the UIs scale by alpha/rank). DoRA magnitudes go in `.dora_scale`.
- LoHa / LoKr (LyCORIS layout, built into A1111 since 1.5, Forge, ComfyUI, InvokeAI): the same module
  names with `.hada_w1_a`, `.hada_w1_b`, `.hada_w2_a`, `.hada_w2_b` / `.lokr_w1`, `.lokr_w2_a`, ... and
  `.alpha`. A1111 picks the algorithm by these names (extensions-builtin/Lora/network_hada.py, network_lokr.py).
- LoKr stores W2 whole (`.lokr_w2`, the product W2a·W2b) on the layers InvokeAI's install probe reads
  (trainer.export.invokeai): it reads a LoKr layer only when both factors are whole. With both whole every UI
  applies scale 1 and ignores alpha, so the trained scale is folded into W2 and `.alpha` holds the rank, as
  LyCORIS writes such layers. Elsewhere W2 stays as trained: two factors are the smaller file at the usual
  ranks (with lokr_factor 4 a whole W2 is several times its two factors).
- AdaLoRA (SVD form P·diag(E)·Q) is written as plain LoRA with each module's own rank (pruned triplets
  folded away); the per-module `.alpha` keeps each module's trained scale.
"""

from __future__ import annotations

import torch

from trainer.export.invokeai import probed

PEFT_SUFFIX = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}
# LyCORIS parameter names: peft's LoHa/LoKr layers use them too, so they are exported unchanged
LYCORIS_PARTS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
                 "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
ADALORA_PARTS = ("lora_A", "lora_B", "lora_E")  # peft's AdaLoRA parameters (no `.weight`): folded on export


def kohya_module_name(component: str, module: str, arch: str, denoiser_config: dict | None) -> str:
    """The kohya name of one adapted module, by the rules of family `arch` (trainer.families)."""
    from trainer.families.registry import get

    return get(arch).kohya_name(component, module, denoiser_config)


def to_kohya(adapters: dict[str, dict[str, torch.Tensor]], arch: str, unet_config: dict,
             scales: dict[str, dict[str, tuple[int, float]]], dtype: torch.dtype = torch.float16,
             ) -> dict[str, torch.Tensor]:
    """{component: peft state dict} -> the kohya/LyCORIS state dict of family `arch` (most families:
    `kohya_tensors` with their module names; FLUX.1 stacks its split q/k/v into the fused BFL layers).

    `scales` is {component: {module: (rank, scale)}} as trained (trainer.lora.algorithms.module_scales).
    """
    from trainer.families.registry import get

    return get(arch).export_kohya(adapters, unet_config, scales, dtype)


def kohya_tensors(adapters: dict[str, dict[str, torch.Tensor]], name_of, scales: dict, dtype: torch.dtype,
                  ) -> dict[str, torch.Tensor]:
    """One kohya/LyCORIS state dict with `.alpha` per module, each module named `name_of(component, module)`."""
    out: dict[str, torch.Tensor] = {}
    for component, state in adapters.items():
        for module, parts in _group_peft(state).items():
            name = name_of(component, module)
            rank, scale = scales[component][module]
            if "lora_E" in parts:
                parts, rank = fold_triplets(parts)
                if not rank:
                    continue  # AdaLoRA pruned every triplet: the module adds nothing
            if probed(name):
                parts = whole_lokr_w2(parts)
            for part, tensor in _module_parts(parts, module, state, rank, scale).items():
                out[f"{name}.{part}"] = tensor.to(dtype).contiguous()
    return out


def folded(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """kohya tensors -> the same modules as `lora_A`/`lora_B` with alpha / rank folded into B and no `.alpha`:
    the form Z-Image's and FLUX.2 klein's files must take (with an `.alpha` key InvokeAI and diffusers refuse
    a klein file)."""
    out = {}
    for key, down in tensors.items():
        if key.endswith(".lora_down.weight"):
            module = key.removesuffix(".lora_down.weight")
            up, alpha = tensors[f"{module}.lora_up.weight"], tensors.get(f"{module}.alpha")
            scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
            out[f"{module}.lora_A.weight"] = down
            out[f"{module}.lora_B.weight"] = up if scale == 1 else (up.float() * scale).to(up.dtype)
    return out


def _group_peft(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        module, suffix = _split_peft_key(key)
        grouped.setdefault(module, {})[suffix] = tensor
    return grouped


def _module_parts(parts: dict, module: str, state: dict, rank: int, scale: float) -> dict[str, torch.Tensor]:
    """One module's tensors under the names the UIs read, and the alpha that gives them the trained scale."""
    if "lokr_w1" in parts and "lokr_w2" in parts:
        # LoKr with both factors whole has no rank in the file: A1111, Forge, ComfyUI, InvokeAI and LyCORIS
        # then apply scale 1 and ignore alpha, so the trained scale is folded into W2 (alpha = rank, as
        # LyCORIS writes it).
        parts = dict(parts, lokr_w2=parts["lokr_w2"].float() * scale)
        alpha = float(rank)
    else:
        alpha = rank * scale  # the UIs scale by alpha / rank
    out = {}
    for suffix, tensor in parts.items():
        if suffix == "lora_magnitude_vector":
            out["dora_scale"] = _dora_scale_shape(tensor, state, module)
        else:
            out[PEFT_SUFFIX.get(suffix, suffix)] = tensor
    out["alpha"] = torch.tensor(alpha)
    return out


def whole_lokr_w2(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LoKr module with W2 stored whole (W2a·W2b in fp32); other modules, and Tucker's W2, unchanged."""
    if "lokr_w2_a" not in parts or "lokr_t2" in parts:
        return parts
    rest = {k: v for k, v in parts.items() if k not in ("lokr_w2_a", "lokr_w2_b")}
    return dict(rest, lokr_w2=parts["lokr_w2_a"].float() @ parts["lokr_w2_b"].float())


def _split_peft_key(key: str) -> tuple[str, str]:
    for suffix in ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector", *LYCORIS_PARTS, *ADALORA_PARTS):
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    raise ValueError(f"unexpected adapter key '{key}'")


def fold_triplets(parts: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """One AdaLoRA module, P·diag(E)·Q (lora_B, lora_E, lora_A), as plain LoRA tensors with the triplets the
    allocator pruned (E = 0) removed: down = diag(E)·Q[kept], up = P[:, kept]. Returns (tensors, rank)."""
    e = parts["lora_E"].float().view(-1)
    kept = (e != 0).nonzero().view(-1)
    down = parts["lora_A"].float()[kept] * e[kept, None]
    return {"lora_A.weight": down, "lora_B.weight": parts["lora_B"].float()[:, kept]}, int(kept.numel())


def lycoris_algorithm(keys) -> str | None:
    """'loha' / 'lokr' when a kohya-layout file holds LyCORIS tensors, else None (plain LoRA)."""
    for key in keys:
        part = key.rsplit(".", 1)[-1]
        if part.startswith("hada_"):
            return "loha"
        if part.startswith("lokr_"):
            return "lokr"
    return None


def _dora_scale_shape(magnitude: torch.Tensor, state: dict, module: str) -> torch.Tensor:
    # peft keeps one magnitude per output feature, (out,) or (1, out, 1, 1) for convs; the kohya/LyCORIS form the UIs read is
    # (out, 1) for linear layers and (out, 1, 1, 1) for convolutions, i.e. shaped like the weight's rows.
    up = state[f"{module}.lora_B.weight"]
    return magnitude.reshape(-1, *([1] * (up.dim() - 1)))
