"""Name maps between FLUX.1's BFL single-file layout and diffusers' FluxTransformer2DModel.

Users keep FLUX.1 as Black Forest Labs ship it (`flux1-dev.safetensors`: `double_blocks.N.img_attn.qkv`,
`single_blocks.N.linear1`, ..., sometimes under `model.diffusion_model.`); we train diffusers'
FluxTransformer2DModel, which splits the fused projections into separate layers. Three things differ:

- names (`double_blocks.N.img_mod.lin` is `transformer_blocks.N.norm1.linear`, norms' `scale` is `weight`);
- row stacks: one BFL weight holds several diffusers weights on top of each other, in this order:
  `img_attn.qkv` = to_q | to_k | to_v, `txt_attn.qkv` = add_q_proj | add_k_proj | add_v_proj,
  single `linear1` = to_q | to_k | to_v | proj_mlp (3 x hidden + 4 x hidden rows);
- `final_layer.adaLN_modulation.1` stores shift | scale, diffusers' `norm_out.linear` scale | shift.

Everything here is pure and works on tensors or on bare shapes (a tuple or torch.Size per key), so the
benchmarks can plan a 12 GB file from a meta model and a merge can write a BFL file. diffusers' own
`convert_flux_transformer_checkpoint_to_diffusers` only reads BFL (and assumes the real model's 3072
width); this module goes both ways at any width, and maps LoRA modules for the kohya export.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

BFL_PREFIX = "model.diffusion_model."  # ComfyUI/Forge full checkpoints nest the transformer under it
MLP_RATIO = 4  # FluxSingleTransformerBlock's proj_mlp width / hidden (diffusers does not make it a setting)

# one-to-one modules outside the blocks: diffusers name -> BFL name
GLOBAL = {
    "x_embedder": "img_in", "context_embedder": "txt_in",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "proj_out": "final_layer.linear", "norm_out.linear": "final_layer.adaLN_modulation.1",
}
GUIDANCE = {"time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
            "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer"}
SWAPPED = {"norm_out.linear"}  # BFL rows shift|scale, diffusers rows scale|shift
# inside transformer_blocks.N (diffusers) / double_blocks.N (BFL)
DOUBLE = {
    "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin",
    "attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2",
}
DOUBLE_FUSED = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
                "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
DOUBLE_NORMS = {"attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
                "attn.norm_added_q": "txt_attn.norm.query_norm",
                "attn.norm_added_k": "txt_attn.norm.key_norm"}
# inside single_transformer_blocks.N (diffusers) / single_blocks.N (BFL)
SINGLE = {"norm.linear": "modulation.lin", "proj_out": "linear2"}
SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}
SINGLE_NORMS = {"attn.norm_q": "norm.query_norm", "attn.norm_k": "norm.key_norm"}


@dataclass(frozen=True)
class Link:
    """One BFL module and the diffusers module(s) it holds, stacked by rows in `parts` order."""
    bfl: str
    parts: tuple[str, ...]
    norm: bool = False   # an RMSNorm: BFL calls its one parameter `scale`, diffusers `weight`
    swap: bool = False   # the two row halves are in the other order in BFL

    def params(self) -> tuple[tuple[str, str], ...]:
        """(BFL parameter, diffusers parameter) pairs of this module."""
        return (("scale", "weight"),) if self.norm else (("weight", "weight"), ("bias", "bias"))


def links(num_double: int, num_single: int, guidance: bool) -> list[Link]:
    """Every module of a FLUX.1 transformer of that depth; `guidance`: dev's guidance_in (not in schnell)."""
    top = dict(GLOBAL, **(GUIDANCE if guidance else {}))
    out = [Link(bfl, (d,), swap=d in SWAPPED) for d, bfl in top.items()]
    for i in range(num_double):
        out += _block_links(f"transformer_blocks.{i}.", f"double_blocks.{i}.", DOUBLE, DOUBLE_FUSED,
                            DOUBLE_NORMS)
    for i in range(num_single):
        out += _block_links(f"single_transformer_blocks.{i}.", f"single_blocks.{i}.", SINGLE, SINGLE_FUSED,
                            SINGLE_NORMS)
    return out


def _block_links(d: str, b: str, plain: dict, fused: dict, norms: dict) -> list[Link]:
    out = [Link(b + bfl, (d + name,)) for name, bfl in plain.items()]
    out += [Link(b + bfl, tuple(d + p for p in parts)) for bfl, parts in fused.items()]
    return out + [Link(b + bfl, (d + name,), norm=True) for name, bfl in norms.items()]


def depth(keys: Iterable[str], contiguous: bool = True) -> tuple[int, int, bool]:
    """(double blocks, single blocks, has guidance) of a state dict in either layout, with or without prefix.
    `contiguous=False` for names that may skip blocks (a LoRA on some blocks only): the highest index + 1."""
    keys = [k.removeprefix(BFL_PREFIX) for k in keys]
    double = _count(keys, r"(?:double_blocks|transformer_blocks)\.(\d+)\.", contiguous)
    single = _count(keys, r"(?:single_blocks|single_transformer_blocks)\.(\d+)\.", contiguous)
    guidance = any(k.startswith(("guidance_in.", "time_text_embed.guidance_embedder.")) for k in keys)
    return double, single, guidance


def _count(keys: list[str], pattern: str, contiguous: bool) -> int:
    found = {int(m[1]) for k in keys if (m := re.match(pattern, k))}
    if contiguous and found and found != set(range(max(found) + 1)):
        raise ValueError(f"FLUX blocks are not numbered 0..{max(found)}: {sorted(found)}")
    return max(found) + 1 if found else 0


def is_bfl(keys: Iterable[str]) -> bool:
    """True for the BFL layout (with or without `model.diffusion_model.`), False for diffusers' names."""
    return any(k.removeprefix(BFL_PREFIX).startswith(("double_blocks.", "single_blocks.")) for k in keys)


def diffusers_to_bfl(state: Mapping, prefix: str = "") -> dict:
    """diffusers FluxTransformer2DModel state dict (tensors or shapes) -> BFL names, fused rows stacked.
    `prefix` is prepended to every key (BFL_PREFIX for a ComfyUI-style full checkpoint)."""
    out, used = {}, set()
    for link in links(*depth(state)):
        for bfl_param, d_param in link.params():
            names = [f"{part}.{d_param}" for part in link.parts]
            pieces = [_need(state, n) for n in names]
            value = _cat(pieces) if len(pieces) > 1 else pieces[0]
            out[f"{prefix}{link.bfl}.{bfl_param}"] = _swap(value) if link.swap else value
            used.update(names)
    _refuse_leftovers(state, used, "diffusers")
    return out


def bfl_to_diffusers(state: Mapping) -> dict:
    """BFL FLUX.1 transformer state dict (tensors or shapes; `model.diffusion_model.` optional) -> diffusers
    names, fused rows split. Other keys (a full checkpoint's VAE or text encoders) are an error: select the
    transformer's keys first with `transformer_keys`."""
    state = {k.removeprefix(BFL_PREFIX): v for k, v in state.items()}
    hidden = _rows(_need(state, "img_in.weight"))  # img_in maps the packed latents to the hidden width
    out, used = {}, set()
    for link in links(*depth(state)):
        for bfl_param, d_param in link.params():
            name = f"{link.bfl}.{bfl_param}"
            value = _need(state, name)
            value = _swap(value) if link.swap else value
            pieces = _split(value, _part_rows(link, _rows(value), hidden)) if len(link.parts) > 1 else [value]
            out.update({f"{part}.{d_param}": piece for part, piece in zip(link.parts, pieces)})
            used.add(name)
    _refuse_leftovers(state, used, "BFL")
    return out


def transformer_keys(keys: Iterable[str]) -> list[str]:
    """The keys of a BFL file that belong to the FLUX transformer (a full checkpoint also holds
    `vae.`/`text_encoders.` or `first_stage_model.`/`cond_stage_model.` parts)."""
    roots = {link.bfl.split(".")[0] for link in links(1, 1, True)}
    return [k for k in keys if k.removeprefix(BFL_PREFIX).split(".")[0] in roots]


def _part_rows(link: Link, total: int, hidden: int) -> list[int]:
    """Rows of each stacked part: q, k, v are `hidden` each; proj_mlp takes the rest (MLP_RATIO x hidden)."""
    sizes = [hidden] * len(link.parts)
    if link.parts[-1].endswith("proj_mlp"):
        sizes[-1] = total - hidden * (len(link.parts) - 1)
    if sum(sizes) != total or min(sizes) <= 0:
        raise ValueError(f"{link.bfl}: {total} rows do not split into {link.parts} at width {hidden}")
    return sizes


def _need(state: Mapping, name: str):
    if name not in state:
        raise KeyError(f"FLUX transformer weight {name} is missing")
    return state[name]


def _refuse_leftovers(state: Mapping, used: set, layout: str) -> None:
    # a silently dropped tensor would train or merge a model that is not the user's
    left = sorted(set(state) - used)
    if left:
        raise ValueError(f"{len(left)} keys are not FLUX.1 transformer weights in the {layout} layout: "
                         f"{', '.join(left[:5])}{' ...' if len(left) > 5 else ''}")


def _rows(value) -> int:
    return int(value.shape[0] if isinstance(value, torch.Tensor) else value[0])


def _cat(pieces: list):
    if isinstance(pieces[0], torch.Tensor):
        return torch.cat(pieces, dim=0)
    rest = {tuple(p[1:]) for p in pieces}
    if len(rest) != 1:
        raise ValueError(f"stacked FLUX weights differ in width: {pieces}")
    return (sum(p[0] for p in pieces), *rest.pop())


def _split(value, sizes: list[int]) -> list:
    if isinstance(value, torch.Tensor):
        return list(torch.split(value, sizes, dim=0))
    return [(size, *value[1:]) for size in sizes]


def _swap(value):
    """Exchange the two row halves (shift|scale <-> scale|shift); its own inverse. Shapes are unchanged."""
    if not isinstance(value, torch.Tensor):
        return tuple(value)
    first, second = value.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


# ---- LoRA: a LoRA trained on diffusers' split layers, exported in kohya's BFL names --------------------


@dataclass(frozen=True)
class LoraSlot:
    """Where a diffusers LoRA module goes in kohya's BFL layout. For a stacked BFL layer, the piece's up
    matrix fills rows [row_offset, row_offset + rows) of the fused layer's `fused_rows`; for a one-to-one
    layer rows and fused_rows are None (the whole layer) and `swap` says the up rows' halves exchange."""
    kohya: str
    row_offset: int = 0
    rows: int | None = None
    fused_rows: int | None = None
    swap: bool = False


def kohya_name(bfl_module: str) -> str:
    """kohya/ComfyUI LoRA module name of a BFL module: `double_blocks.0.img_attn.qkv` ->
    `lora_unet_double_blocks_0_img_attn_qkv`."""
    return "lora_unet_" + bfl_module.replace(".", "_")


def kohya_bfl_lora_names(names: Iterable[str], hidden_size: int) -> dict[str, LoraSlot]:
    """For each diffusers LoRA module name (relative to the transformer; a leading `transformer.` is
    accepted), the kohya BFL module it goes into and where. `hidden_size` is the transformer's width
    (num_attention_heads x attention_head_dim: 3072 for FLUX.1), which fixes every row offset."""
    names = list(names)
    where = {}
    for link in links(*depth((n.removeprefix("transformer.") for n in names), contiguous=False)):
        if link.norm:
            continue  # RMSNorm scales are vectors: no LoRA
        sizes = _lora_part_rows(link, hidden_size)
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        for part, size, offset in zip(link.parts, sizes, offsets):
            where[part] = (LoraSlot(kohya_name(link.bfl), offset, size, sum(sizes)) if len(link.parts) > 1
                           else LoraSlot(kohya_name(link.bfl), swap=link.swap))
    out = {}
    for name in names:
        slot = where.get(name.removeprefix("transformer."))
        if slot is None:
            raise ValueError(f"{name} is not a FLUX.1 transformer linear layer that a kohya LoRA can hold")
        out[name] = slot
    return out


def _lora_part_rows(link: Link, hidden: int) -> list[int]:
    return [hidden * MLP_RATIO if p.endswith("proj_mlp") else hidden for p in link.parts]


def fuse_lora(pieces: list[tuple[LoraSlot, torch.Tensor, torch.Tensor, float]], fold: bool = False) -> tuple:
    """The kohya (down, up, alpha) of one BFL layer from its diffusers pieces [(slot, down, up, scale)],
    `scale` being each piece's alpha / rank. down = the pieces' downs stacked (rank r1 + r2 + ...), up = their
    ups placed block-diagonally at each piece's rows, zero elsewhere, so up @ down is exactly the pieces'
    deltas stacked. When every piece has the same scale s the ups are copied bit for bit and alpha = s x rank
    (an integer for k equal-rank pieces of integer alpha: exact in any dtype). Otherwise, or with `fold`,
    each up is multiplied by its scale and alpha = rank (scale 1). Use `fold` for `final_layer.*`:
    diffusers' kohya FLUX loader ignores those layers' alphas."""
    slot = pieces[0][0]
    if any(p[0].kohya != slot.kohya for p in pieces):
        raise ValueError(f"pieces of different layers: {sorted({p[0].kohya for p in pieces})}")
    if slot.fused_rows is None:  # a one-to-one layer: nothing to stack
        (_, down, up, scale), = pieces
        up = up * scale if fold else up
        return down, (_swap(up) if slot.swap else up), (1.0 if fold else scale) * down.shape[0]
    rank = sum(down.shape[0] for _, down, _, _ in pieces)
    same = len({s for *_, s in pieces}) == 1 and not fold
    up = pieces[0][2].new_zeros(slot.fused_rows, rank)
    col = 0
    for piece, down, piece_up, scale in sorted(pieces, key=lambda p: p[0].row_offset):
        r = down.shape[0]
        rows = slice(piece.row_offset, piece.row_offset + piece.rows)
        up[rows, col:col + r] = piece_up if same else piece_up * scale
        col += r
    down = torch.cat([d for _, d, _, _ in sorted(pieces, key=lambda p: p[0].row_offset)], dim=0)
    return down, up, (pieces[0][3] if same else 1.0) * rank
