"""Z-Image's original single-file layout <-> diffusers' ZImageTransformer2DModel, for weights and LoRA.

Users keep Z-Image as ComfyUI ships it (`z_image_bf16.safetensors`, `z_image_turbo_bf16.safetensors`,
fp8 copies; sometimes under `model.diffusion_model.`), in the names of ComfyUI's NextDiT class (shared
with Lumina 2); Tongyi-MAI's own code and diffusers both use split names. They differ in four places:

- `layers.N.attention.qkv` holds to_q | to_k | to_v stacked by rows (also in `noise_refiner.N` and
  `context_refiner.N`); `attention.out` is `attention.to_out.0`; `attention.q_norm`/`k_norm` are
  `attention.norm_q`/`norm_k`;
- `x_embedder` is `all_x_embedder.2-1` and `final_layer.*` is `all_final_layer.2-1.*` (diffusers keys
  its patch embedders by "patch-fpatch" size; Z-Image has the one 2-1 pair);
- `context_refiner` blocks have no `adaLN_modulation` (they see only the caption);
- some files carry `norm_final.weight`, a norm ComfyUI's shared Lumina/Z-Image class has but Z-Image
  never uses; it is dropped on read (diffusers' converter drops it too) and never written.

Base and Turbo have identical names and shapes: nothing in the weights tells them apart.

LoRA: the one layout that ComfyUI, Forge Neo, InvokeAI and diffusers all apply is `diffusion_model.` +
diffusers module names with split q/k/v and `lora_A`/`lora_B`, alpha folded into B and no `.alpha`
(issue 28's measurements). Our LoRA is trained on diffusers' split layers, so the export only renames;
a LoRA in the original fused names (`…attention.qkv`) is split into to_q/to_k/to_v by copying: each part
keeps the whole down matrix and its rows of the up matrix, which gives exactly its rows of the delta.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from trainer.models import fused_layout
from trainer.models.bfl_layout import LoraSlot
from trainer.models.fused_layout import Layout, Link

PREFIX = "model.diffusion_model."  # ComfyUI full checkpoints nest the transformer under it
LORA_PREFIX = "diffusion_model."
GROUPS = ("layers", "noise_refiner", "context_refiner")
TOP = {"x_embedder": "all_x_embedder.2-1", "final_layer.linear": "all_final_layer.2-1.linear",
       "final_layer.adaLN_modulation.1": "all_final_layer.2-1.adaLN_modulation.1",
       "t_embedder.mlp.0": "t_embedder.mlp.0", "t_embedder.mlp.2": "t_embedder.mlp.2",
       "cap_embedder.1": "cap_embedder.1"}
NORMS = {"cap_embedder.0": "cap_embedder.0"}  # the caption features' RMSNorm
BLOCK = {"attention.out": "attention.to_out.0", "feed_forward.w1": "feed_forward.w1",
         "feed_forward.w2": "feed_forward.w2", "feed_forward.w3": "feed_forward.w3"}
BLOCK_NORMS = {"attention.q_norm": "attention.norm_q", "attention.k_norm": "attention.norm_k",
               "attention_norm1": "attention_norm1", "attention_norm2": "attention_norm2",
               "ffn_norm1": "ffn_norm1", "ffn_norm2": "ffn_norm2"}
MODULATION = "adaLN_modulation.0"  # every block but the context refiner's
FUSED_QKV = ("attention.to_q", "attention.to_k", "attention.to_v")
BARE = frozenset({"x_pad_token", "cap_pad_token"})
IGNORED = frozenset({"norm_final.weight"})


def layout(depths: Mapping[str, int]) -> Layout:
    """Every module of a Z-Image transformer with `depths[group]` blocks per group."""
    links = [Link(orig, (d,)) for orig, d in TOP.items()]
    links += [Link(orig, (d,), linear=False) for orig, d in NORMS.items()]
    for group in GROUPS:
        for i in range(depths.get(group, 0)):
            b = f"{group}.{i}."
            links.append(Link(b + "attention.qkv", tuple(b + p for p in FUSED_QKV)))
            links += [Link(b + orig, (b + d,)) for orig, d in BLOCK.items()]
            links += [Link(b + orig, (b + d,), linear=False) for orig, d in BLOCK_NORMS.items()]
            if group != "context_refiner":
                links.append(Link(b + MODULATION, (b + MODULATION,)))
    return Layout("Z-Image transformer", tuple(links), bare=BARE, ignored=IGNORED)


def depths(keys: Iterable[str], contiguous: bool = True) -> dict[str, int]:
    """Blocks per group of a state dict in either layout, with or without prefix. `contiguous=False`
    for names that may skip blocks (a LoRA on some blocks only): the highest index + 1."""
    found: dict[str, set[int]] = {g: set() for g in GROUPS}
    for key in keys:
        m = re.match(r"(?:model\.)?(?:diffusion_model\.)?(layers|noise_refiner|context_refiner)\.(\d+)\.", key)
        if m:
            found[m[1]].add(int(m[2]))
    out = {}
    for group, idx in found.items():
        if contiguous and idx and idx != set(range(max(idx) + 1)):
            raise ValueError(f"Z-Image {group} blocks are not numbered 0..{max(idx)}: {sorted(idx)}")
        out[group] = max(idx) + 1 if idx else 0
    return out


def is_original(keys: Iterable[str]) -> bool:
    """True for the original layout (with or without prefix), False for diffusers' names."""
    return any(k.removeprefix(PREFIX).startswith(("x_embedder.", "final_layer.")) or ".attention.qkv." in k
               for k in keys)


def to_diffusers(state: Mapping) -> dict:
    """Original Z-Image state dict (tensors or shapes, fp8 sidecars allowed, `model.diffusion_model.`
    optional) -> diffusers names, qkv split by rows. Foreign keys (a full checkpoint's VAE or text
    encoder) are an error: select the transformer's keys first."""
    state = {k.removeprefix(PREFIX): v for k, v in state.items()}
    dim = fused_layout.rows_of(state["x_embedder.weight"]) if "x_embedder.weight" in state else None
    if dim is None:
        raise KeyError("Z-Image transformer weight x_embedder.weight is missing")
    return fused_layout.to_diffusers(state, layout(depths(state)), lambda link: dim)


def to_original(state: Mapping, prefix: str = "") -> dict:
    """diffusers ZImageTransformer2DModel state dict (tensors or shapes) -> original names, q/k/v
    stacked; `prefix` (e.g. PREFIX) is prepended to every key."""
    return fused_layout.to_original(state, layout(depths(state)), prefix)


# ---- LoRA ----------------------------------------------------------------------------------------------


def lora_name(module: str) -> str:
    """The exported name of a diffusers LoRA module: `layers.3.attention.to_q` ->
    `diffusion_model.layers.3.attention.to_q`. Refuses a module Z-Image does not have as a linear."""
    module = module.removeprefix("transformer.")
    link, _ = layout(depths([module], contiguous=False)).by_part.get(module, (None, 0))
    if link is None or not link.linear:
        raise ValueError(f"{module} is not a Z-Image linear layer")
    return LORA_PREFIX + module


def lora_export(pieces: Mapping[str, tuple[torch.Tensor, torch.Tensor, float]]) -> dict[str, torch.Tensor]:
    """{diffusers module: (down, up, alpha / rank)} -> the universally loadable file: lora_A = down,
    lora_B = up x scale (a bit copy when the scale is 1), no `.alpha` key."""
    out = {}
    for module, (down, up, scale) in pieces.items():
        name = lora_name(module)
        out[f"{name}.lora_A.weight"] = down
        out[f"{name}.lora_B.weight"] = up if scale == 1 else up * scale
    return out


def lora_read(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """A Z-Image LoRA file in diffusers or original names (`diffusion_model.`/`transformer.` prefix or
    none; lora_A/B or lora_down/up; `.alpha` optional) -> {diffusers module: (down, up, alpha / rank)}.
    A fused `attention.qkv` LoRA becomes to_q/to_k/to_v by copying (see the module docstring)."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        bare = re.sub(r"^(diffusion_model\.|transformer\.|model\.diffusion_model\.)", "", key)
        m = re.match(r"(.+)\.(lora_A|lora_B|lora_down|lora_up)\.weight$|(.+)\.(alpha)$", bare)
        if not m:
            raise ValueError(f"{key} is not a LoRA key")
        module, kind = (m[1], m[2]) if m[1] else (m[3], m[4])
        modules.setdefault(module, {})[{"lora_down": "lora_A", "lora_up": "lora_B"}.get(kind, kind)] = value
    out = {}
    for module, parts in modules.items():
        down, up = parts["lora_A"], parts["lora_B"]
        scale = float(parts["alpha"]) / down.shape[0] if "alpha" in parts else 1.0
        out.update(_lora_pieces(module, down, up, scale))
    return out


def _lora_pieces(module: str, down, up, scale) -> dict:
    if module.endswith(".attention.qkv"):  # Z-Image has as many k/v heads as q heads: equal thirds
        base = module.removesuffix("attention.qkv")
        third = up.shape[0] // 3
        return {base + p: (down, up[i * third:(i + 1) * third], scale) for i, p in enumerate(FUSED_QKV)}
    for orig, d in {**TOP, "attention.out": "attention.to_out.0"}.items():
        if module == orig or module.endswith("." + orig):
            module = module[:len(module) - len(orig)] + d
    return {module: (down, up, scale)}


def merge_slots(names: Iterable[str], out_features: Mapping[str, int]) -> dict[str, LoraSlot]:
    """Where each diffusers LoRA delta goes when merged into an original-layout file: the original
    module and its rows (q/k/v fill thirds of `attention.qkv`). `out_features`: each diffusers linear's
    output width, read from the model."""
    names = list(names)
    lay = layout(depths((n.removeprefix("transformer.") for n in names), contiguous=False))
    return fused_layout.lora_slots(names, lay, out_features)
