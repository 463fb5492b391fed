"""FLUX.2's BFL single-file layout <-> diffusers' Flux2Transformer2DModel and AutoencoderKLFlux2, and the
klein LoRA export.

Users keep FLUX.2 klein as BFL ship it (`flux-2-klein-base-4b.safetensors`, `flux-2-klein-4b.safetensors`,
`…-9b`, fp8 copies with `.weight_scale`/`.input_scale`; ComfyUI full checkpoints under
`model.diffusion_model.`). FLUX.2 renames more than it fuses, unlike FLUX.1:

- only the double blocks' `img_attn.qkv` / `txt_attn.qkv` stack diffusers layers (to_q | to_k | to_v,
  add_q_proj | add_k_proj | add_v_proj); the single blocks' `linear1` IS diffusers' `attn.to_qkv_mlp_proj`
  (diffusers keeps it fused) and the SwiGLU `img_mlp.0` IS `ff.linear_in`;
- modulation is shared per stream (`double_stream_modulation_img/txt.lin`, `single_stream_modulation.lin`),
  not per block as in FLUX.1, which is what tells the two apart;
- `final_layer.adaLN_modulation.1` stores shift | scale, diffusers' `norm_out.linear` scale | shift;
- no layer has a bias; norms' parameter is `scale` (diffusers `weight`); klein has no `guidance_in`
  (FLUX.2 [dev] does).

The FLUX.2 VAE (`flux2-vae.safetensors`, BFL names) is an LDM-named autoencoder with 32 latent channels
whose `quant_conv`/`post_quant_conv` sit inside `encoder.`/`decoder.`, plus `bn.running_mean/var`
(`bn.num_batches_tracked` too when saved from a module): the batch-norm statistics that normalise the
2x2-patchified 128-channel latents. diffusers 0.42.1 cannot single-file-load it, so `vae_to_diffusers`
does the names, and the attention's 1x1 convolutions become linear weights.

LoRA: the layout all four UIs apply is `diffusion_model.` + BFL names with the qkv fused, `lora_A`/`lora_B`
and no `.alpha` (InvokeAI reports "Unsupported lora format" and diffusers raises on an `.alpha` key). The
pieces trained on diffusers' split q/k/v are stacked exactly by bfl_layout.fuse_lora (down =
concatenation, up = block-diagonal) with the scale folded into up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from trainer.models import fused_layout
from trainer.models.bfl_layout import LoraSlot, fuse_lora
from trainer.models.fused_layout import Layout, Link

PREFIX = "model.diffusion_model."
LORA_PREFIX = "diffusion_model."
GLOBAL = {"img_in": "x_embedder", "txt_in": "context_embedder",
          "time_in.in_layer": "time_guidance_embed.timestep_embedder.linear_1",
          "time_in.out_layer": "time_guidance_embed.timestep_embedder.linear_2",
          "double_stream_modulation_img.lin": "double_stream_modulation_img.linear",
          "double_stream_modulation_txt.lin": "double_stream_modulation_txt.linear",
          "single_stream_modulation.lin": "single_stream_modulation.linear", "final_layer.linear": "proj_out"}
GUIDANCE = {"guidance_in.in_layer": "time_guidance_embed.guidance_embedder.linear_1",
            "guidance_in.out_layer": "time_guidance_embed.guidance_embedder.linear_2"}
FINAL_MOD = ("final_layer.adaLN_modulation.1", "norm_out.linear")  # halves swapped
DOUBLE = {"img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out", "img_mlp.0": "ff.linear_in",
          "img_mlp.2": "ff.linear_out", "txt_mlp.0": "ff_context.linear_in", "txt_mlp.2": "ff_context.linear_out"}
DOUBLE_FUSED = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
                "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
DOUBLE_NORMS = {"img_attn.norm.query_norm": "attn.norm_q", "img_attn.norm.key_norm": "attn.norm_k",
                "txt_attn.norm.query_norm": "attn.norm_added_q", "txt_attn.norm.key_norm": "attn.norm_added_k"}
SINGLE = {"linear1": "attn.to_qkv_mlp_proj", "linear2": "attn.to_out"}
SINGLE_NORMS = {"norm.query_norm": "attn.norm_q", "norm.key_norm": "attn.norm_k"}


def layout(num_double: int, num_single: int, guidance: bool) -> Layout:
    """Every module of a FLUX.2 transformer of that depth; `guidance`: FLUX.2 [dev]'s guidance_in."""
    top = dict(GLOBAL, **(GUIDANCE if guidance else {}))
    links = [Link(bfl, (d,)) for bfl, d in top.items()] + [Link(FINAL_MOD[0], (FINAL_MOD[1],), swap=True)]
    for i in range(num_double):
        b, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        links += [Link(b + bfl, (d + x,)) for bfl, x in DOUBLE.items()]
        links += [Link(b + bfl, tuple(d + p for p in parts)) for bfl, parts in DOUBLE_FUSED.items()]
        links += [Link(b + bfl, (d + x,), norm=True, linear=False) for bfl, x in DOUBLE_NORMS.items()]
    for i in range(num_single):
        b, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        links += [Link(b + bfl, (d + x,)) for bfl, x in SINGLE.items()]
        links += [Link(b + bfl, (d + x,), norm=True, linear=False) for bfl, x in SINGLE_NORMS.items()]
    return Layout("FLUX.2 transformer", tuple(links))


def depth(keys: Iterable[str], contiguous: bool = True) -> tuple[int, int, bool]:
    """(double blocks, single blocks, has guidance) in either layout, with or without a prefix."""
    keys = [re.sub(r"^(model\.diffusion_model\.|diffusion_model\.|transformer\.)", "", k) for k in keys]
    double = _count(keys, r"(?:double_blocks|transformer_blocks)\.(\d+)\.", contiguous)
    single = _count(keys, r"(?:single_blocks|single_transformer_blocks)\.(\d+)\.", contiguous)
    guidance = any(k.startswith(("guidance_in.", "time_guidance_embed.guidance_embedder.")) for k in keys)
    return double, single, guidance


def _count(keys: list[str], pattern: str, contiguous: bool) -> int:
    found = {int(m[1]) for k in keys if (m := re.match(pattern, k))}
    if contiguous and found and found != set(range(max(found) + 1)):
        raise ValueError(f"FLUX.2 blocks are not numbered 0..{max(found)}: {sorted(found)}")
    return max(found) + 1 if found else 0


def to_diffusers(state: Mapping) -> dict:
    """BFL FLUX.2 transformer state dict (tensors or shapes; fp8 sidecars allowed; `model.diffusion_model.`
    optional) -> diffusers names, the double blocks' qkv split in thirds."""
    state = {k.removeprefix(PREFIX): v for k, v in state.items()}
    if "img_in.weight" not in state:
        raise KeyError("FLUX.2 transformer weight img_in.weight is missing")
    hidden = fused_layout.rows_of(state["img_in.weight"])
    return fused_layout.to_diffusers(state, layout(*depth(state)), lambda link: hidden)


def to_original(state: Mapping, prefix: str = "") -> dict:
    """diffusers Flux2Transformer2DModel state dict (tensors or shapes) -> BFL names."""
    return fused_layout.to_original(state, layout(*depth(state)), prefix)


# ---- the FLUX.2 VAE ------------------------------------------------------------------------------------

_VAE_NAMES = [("conv_norm_out", "norm_out"), ("conv_shortcut", "nin_shortcut"),
              ("attentions.0.group_norm", "attn_1.norm"), ("attentions.0.to_q", "attn_1.q"),
              ("attentions.0.to_k", "attn_1.k"), ("attentions.0.to_v", "attn_1.v"),
              ("attentions.0.to_out.0", "attn_1.proj_out")]


def vae_to_original(state: Mapping) -> dict:
    """diffusers AutoencoderKLFlux2 state dict (tensors or shapes) -> BFL's flux2-vae names."""
    n_up = 1 + max(int(m[1]) for k in state if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k)))
    return {_vae_name_to_original(k, n_up): _attention_as_conv(k, v, to_conv=True) for k, v in state.items()}


def vae_to_diffusers(state: Mapping) -> dict:
    """BFL's flux2-vae state dict (tensors or shapes) -> diffusers AutoencoderKLFlux2 names."""
    n_up = 1 + max(int(m[1]) for k in state if (m := re.match(r"decoder\.up\.(\d+)\.", k)))
    out = {}
    for key, value in state.items():
        name = _vae_name_to_diffusers(key, n_up)
        out[name] = _attention_as_conv(name, value, to_conv=False)
    return out


def _vae_name_to_original(key: str, n_up: int) -> str:
    key = re.sub(r"^(quant_conv|post_quant_conv)\.", lambda m: ("encoder." if m[1] == "quant_conv" else "decoder.")
                 + m[0], key)
    key = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m[1]) + 1}", key)
    key = re.sub(r"down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)",
                 lambda m: f"down.{m[1]}." + (f"block.{m[3]}" if m[2] == "resnets" else "downsample"), key)
    key = re.sub(r"up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)",
                 lambda m: f"up.{n_up - 1 - int(m[1])}." + (f"block.{m[3]}" if m[2] == "resnets" else "upsample"), key)
    key = key.replace("mid_block.", "mid.")
    for new, old in _VAE_NAMES:
        key = key.replace(new, old)
    return key


def _vae_name_to_diffusers(key: str, n_up: int) -> str:
    key = re.sub(r"^(encoder\.quant_conv|decoder\.post_quant_conv)\.", lambda m: m[1].split(".")[1] + ".", key)
    for new, old in _VAE_NAMES:
        key = key.replace(old, new)
    key = re.sub(r"mid\.block_(\d)", lambda m: f"mid_block.resnets.{int(m[1]) - 1}", key)
    key = key.replace("mid.attentions", "mid_block.attentions")
    key = re.sub(r"down\.(\d+)\.(block\.(\d+)|downsample)",
                 lambda m: f"down_blocks.{m[1]}." + (f"resnets.{m[3]}" if m[3] else "downsamplers.0"), key)
    key = re.sub(r"up\.(\d+)\.(block\.(\d+)|upsample)",
                 lambda m: f"up_blocks.{n_up - 1 - int(m[1])}." + (f"resnets.{m[3]}" if m[3] else "upsamplers.0"),
                 key)
    return key


def _attention_as_conv(name: str, value, to_conv: bool):
    """The mid-block attention projections are 1x1 convolutions in BFL's file, linear layers in diffusers."""
    if not (re.search(r"(attentions\.0\.(to_q|to_k|to_v|to_out\.0)|attn_1\.(q|k|v|proj_out))\.weight$", name)):
        return value
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)
    if to_conv and len(shape) == 2:
        return value[:, :, None, None] if isinstance(value, torch.Tensor) else shape + (1, 1)
    if not to_conv and len(shape) == 4:
        return value[:, :, 0, 0] if isinstance(value, torch.Tensor) else shape[:2]
    return value


# ---- LoRA ----------------------------------------------------------------------------------------------


def lora_slots(names: Iterable[str], out_features: Mapping[str, int]) -> dict[str, LoraSlot]:
    """Where each diffusers LoRA module goes in the klein export (`diffusion_model.` + BFL name) and which
    rows of a fused qkv it fills. The final modulation is refused: diffusers' FLUX.2 LoRA loader applies
    `final_layer.adaLN_modulation.1` without swapping shift and scale, so no file can be right in both
    diffusers and ComfyUI; leave `norm_out.linear` out of the targets."""
    names = list(names)
    if any(n.removeprefix("transformer.") == FINAL_MOD[1] for n in names):
        raise ValueError(f"{FINAL_MOD[1]}: diffusers and ComfyUI disagree on its row order in a LoRA; "
                         "it cannot be exported so that every UI loads it right")
    lay = layout(*depth(names, contiguous=False))
    return fused_layout.lora_slots(names, lay, out_features, rename=lambda m: LORA_PREFIX + m)


def lora_export(pieces: Mapping[str, tuple[torch.Tensor, torch.Tensor, float]],
                out_features: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """{diffusers module: (down, up, alpha / rank)} -> the klein file: fused qkv stacked, each scale folded
    into its up rows (a bit copy where the scale is 1), lora_A/lora_B, no `.alpha`."""
    slots = lora_slots(pieces, out_features)
    by_layer: dict[str, list] = {}
    for name, (down, up, scale) in pieces.items():
        by_layer.setdefault(slots[name].kohya, []).append((slots[name], down, up, scale))
    out = {}
    for layer, group in by_layer.items():
        # fold: the file has no alpha, so every loader uses scale 1; fuse_lora multiplies only where s != 1
        down, up, _ = fuse_lora([(slot, d, u if s == 1 else u * s, 1.0) for slot, d, u, s in group])
        out[f"{layer}.lora_A.weight"], out[f"{layer}.lora_B.weight"] = down, up
    return out


def lora_read(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """A klein LoRA in BFL names (`diffusion_model.` prefix; lora_A/B or lora_down/up; `.alpha` optional)
    -> {diffusers module: (down, up, alpha / rank)}; a fused qkv gives each of q/k/v the whole down and
    its third of the up rows (a copy: exactly its rows of the delta)."""
    modules: dict[str, dict] = {}
    for key, value in state.items():
        m = re.match(r"(?:diffusion_model\.)?(.+)\.(lora_A|lora_B|lora_down|lora_up|alpha)(?:\.weight)?$", key)
        if not m:
            raise ValueError(f"{key} is not a LoRA key")
        modules.setdefault(m[1], {})[{"lora_down": "lora_A", "lora_up": "lora_B"}.get(m[2], m[2])] = value
    lay = layout(*depth(modules, contiguous=False))
    out = {}
    for module, parts in modules.items():
        link = lay.by_original.get(module)
        if link is None or not link.linear:
            raise ValueError(f"{module} is not a FLUX.2 linear layer")
        down, up = parts["lora_A"], parts["lora_B"]
        scale = float(parts["alpha"]) / down.shape[0] if "alpha" in parts else 1.0
        up = fused_layout.swap_halves(up) if link.swap else up
        rows = fused_layout.split_rows(up, [up.shape[0] // len(link.parts)] * len(link.parts))
        out.update({part: (down, r, scale) for part, r in zip(link.parts, rows)})
    return out
