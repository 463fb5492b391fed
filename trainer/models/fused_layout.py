"""A name map between a single-file layout and diffusers' module names, with fused rows and fp8 sidecars.

Z-Image's original files and FLUX.2's BFL files differ from diffusers in the same three ways FLUX.1
does (bfl_layout.py): modules are renamed, one fused weight holds several diffusers weights stacked by
rows (`attention.qkv` = to_q | to_k | to_v), and a final modulation may store its halves swapped. Unlike
FLUX.1 they also come as fp8 copies that carry sidecar tensors beside a weight:

- `X.weight_scale` / `X.input_scale` (diffusers, BFL, ComfyUI "scaled fp8") and the older ComfyUI
  spellings `X.scale_weight` / `X.scale_input`: a per-tensor scalar or a per-row vector;
- `X.comfy_quant`: ComfyUI's per-layer quantisation note (a uint8 JSON blob).

A sidecar follows its module: renamed with it; for a fused module a scalar (or the JSON note) is given
to every part unchanged and a per-row vector is cut at the same rows as the weight. So `dequant(part)`
is exactly the rows of `dequant(fused)`, and a round trip is bit for bit. Fusing back requires the parts'
scalar sidecars to be equal: parts quantised with different scales cannot share one without
re-quantising, which this module never does silently.

Keys drive the conversion: every key must belong to a known module (a silently dropped tensor would
train a model that is not the user's), every module must have its weight, and optional leaves (biases,
sidecars) pass through when present. Values may be tensors or bare shapes (tuples), so benchmarks can
plan a 12 GB file from a meta model.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

# stacking and half-swapping work on tensors or shapes alike; shared with FLUX.1's map
from trainer.models.bfl_layout import LoraSlot
from trainer.models.bfl_layout import _cat as stack_rows
from trainer.models.bfl_layout import _split as split_rows
from trainer.models.bfl_layout import _swap as swap_halves

SCALAR_SIDECARS = ("weight_scale", "input_scale", "scale_weight", "scale_input")
NOTE_SIDECARS = ("comfy_quant",)  # always shared, never cut
SIDECARS = SCALAR_SIDECARS + NOTE_SIDECARS


@dataclass(frozen=True)
class Link:
    """One module of the user's file and the diffusers module(s) it holds, stacked by rows in `parts`
    order. `norm`: an RMSNorm whose parameter the file calls `scale` (BFL) and diffusers `weight`;
    `swap`: the two row halves are in the other order in the file (shift|scale vs scale|shift);
    `linear`: False for norms and other vectors, which no LoRA targets."""
    original: str
    parts: tuple[str, ...]
    norm: bool = False
    swap: bool = False
    linear: bool = True


@dataclass(frozen=True)
class Layout:
    """Every module of one model. `bare`: parameters without a module (pad tokens), same name both ways;
    `ignored`: keys some files carry that no model uses (dropped on read, never written)."""
    name: str
    links: tuple[Link, ...]
    bare: frozenset[str] = frozenset()
    ignored: frozenset[str] = frozenset()
    by_original: dict = field(init=False, repr=False, compare=False)
    by_part: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "by_original", {link.original: link for link in self.links})
        object.__setattr__(self, "by_part", {p: (link, i) for link in self.links for i, p in enumerate(link.parts)})


def _leaf(key: str) -> tuple[str, str]:
    module, _, leaf = key.rpartition(".")
    return module, leaf


def rows_of(value) -> int:
    return int(value.shape[0] if isinstance(value, torch.Tensor) else value[0])


def _numel(value) -> int:
    shape = value.shape if isinstance(value, torch.Tensor) else value
    return int(torch.Size(shape).numel())


def part_rows(link: Link, total: int, first: int) -> list[int]:
    """Rows of each stacked part: the first (a query projection) is `first` rows, the rest share what is
    left equally (k, v: equal to q unless the model uses grouped-query attention)."""
    rest, n = total - first, len(link.parts) - 1
    if first <= 0 or rest <= 0 or rest % n:
        raise ValueError(f"{link.original}: {total} rows do not split into {link.parts} with {first} first")
    return [first] + [rest // n] * n


def to_diffusers(state: Mapping, layout: Layout, first_rows: Callable[[Link], int], prefix: str = "") -> dict:
    """The user's file (tensors or shapes; `prefix` stripped where present) -> diffusers names.
    `first_rows(link)` is the row count of a fused module's first part (the model's hidden width)."""
    state = {k.removeprefix(prefix) if prefix else k: v for k, v in state.items()}
    out, seen, unknown = {}, set(), []
    for key, value in state.items():
        module, leaf = _leaf(key)
        if key in layout.ignored:
            continue
        if key in layout.bare:
            out[key] = value
            continue
        link = layout.by_original.get(module)
        if link is None:
            unknown.append(key)
            continue
        weight = state.get(f"{module}.{'scale' if link.norm else 'weight'}")
        if weight is None:
            _need([f"{module}.{'scale' if link.norm else 'weight'}"], layout)
        out.update(_split_leaf(link, leaf, value, weight, first_rows))
        seen.add(module)
    _refuse(unknown, layout, "in the file's layout")
    _need([link.original + (".scale" if link.norm else ".weight") for link in layout.links
           if link.original not in seen], layout)
    return out


def _split_leaf(link: Link, leaf: str, value, weight, first_rows) -> dict:
    d_leaf = "weight" if link.norm and leaf == "scale" else leaf
    cut = _cut(link, leaf, value, weight)
    if link.swap and cut == "rows":
        value = swap_halves(value)
    if len(link.parts) == 1:
        return {f"{link.parts[0]}.{d_leaf}": value}
    if cut == "rows":
        sizes = part_rows(link, rows_of(weight), first_rows(link))
        return {f"{p}.{d_leaf}": piece for p, piece in zip(link.parts, split_rows(value, sizes))}
    return {f"{p}.{d_leaf}": value for p in link.parts}  # a scalar sidecar or note: each part keeps it


def _cut(link: Link, leaf: str, value, weight) -> str:
    """How a leaf follows its weight's rows: "rows" (weights, biases, per-row scales) or "shared" (scalar
    scales, notes). Block-wise scales cannot follow a split or a swap and are refused there."""
    if leaf in NOTE_SIDECARS or (leaf in SCALAR_SIDECARS and _numel(value) == 1):
        return "shared"
    if leaf not in SCALAR_SIDECARS or (weight is not None and rows_of(value) == rows_of(weight)):
        return "rows"
    if len(link.parts) > 1 or link.swap:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)
        raise ValueError(f"{link.original}.{leaf}: block-wise fp8 scales {shape} cannot be split or swapped "
                         "with their weight")
    return "shared"


def to_original(state: Mapping, layout: Layout, prefix: str = "") -> dict:
    """diffusers state dict (tensors or shapes) -> the user's file layout, fused parts stacked, every key
    prefixed with `prefix` (`model.diffusion_model.` for a ComfyUI-style full checkpoint)."""
    out, used, leaves = {}, set(), {}
    for key in state:
        module, leaf = _leaf(key)
        if key in layout.bare:
            out[prefix + key] = state[key]
            used.add(key)
        elif module in layout.by_part:
            leaves.setdefault(layout.by_part[module][0], set()).add(leaf)
    _need([f"{p}.weight" for link in layout.links for p in link.parts if link not in leaves], layout)
    for link, names in leaves.items():
        for leaf in sorted(names):
            keys = [f"{p}.{leaf}" for p in link.parts]
            _need([k for k in keys if k not in state], layout)
            value = _join_leaf(link, leaf, [state[k] for k in keys], [state.get(f"{p}.weight") for p in link.parts])
            out[f"{prefix}{link.original}.{'scale' if link.norm and leaf == 'weight' else leaf}"] = value
            used.update(keys)
    _refuse(sorted(set(state) - used), layout, "in diffusers' layout")
    return out


def _join_leaf(link: Link, leaf: str, values: list, weights: list):
    cuts = {_cut(link, leaf, v, w) for v, w in zip(values, weights)}
    if len(values) == 1:
        value = values[0]
    elif cuts == {"rows"}:
        value = stack_rows(values)
    elif all(_same(values[0], v) for v in values[1:]):
        value = values[0]
    else:
        raise ValueError(f"{link.original}: its parts carry different {leaf} values; fusing them would "
                         "need re-quantising the fp8 weights")
    return swap_halves(value) if link.swap and cuts == {"rows"} else value


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):  # bytes: torch.equal has no fp8 kernel
        bits = [t.contiguous().reshape(-1).view(torch.uint8) for t in (a, b)]
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(*bits)
    return tuple(a) == tuple(b)


def _need(missing: list[str], layout: Layout) -> None:
    if missing:
        raise KeyError(f"{layout.name} weight {missing[0]} is missing"
                       + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def _refuse(keys: list[str], layout: Layout, where: str) -> None:
    if keys:
        raise ValueError(f"{len(keys)} keys are not {layout.name} weights {where}: "
                         f"{', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype = torch.bfloat16):
    """An fp8 weight times its scale (scalar or per row), computed in fp32, cast to `dtype`."""
    value = weight.to(torch.float32)
    if scale is not None:
        scale = scale.to(torch.float32)
        if scale.numel() > 1:
            if scale.shape[0] != weight.shape[0] or scale.numel() != weight.shape[0]:
                raise ValueError(f"block-wise fp8 scales {tuple(scale.shape)} for a {tuple(weight.shape)} "
                                 "weight are not supported")
            scale = scale.reshape(-1, *([1] * (weight.dim() - 1)))
        value = value * scale
    return value.to(dtype)


def scale_of(state: Mapping, weight_key: str):
    """The weight scale stored beside `weight_key` under either spelling, or None."""
    module = weight_key.removesuffix(".weight")
    return state.get(f"{module}.weight_scale", state.get(f"{module}.scale_weight"))


def lora_slots(names: Iterable[str], layout: Layout, out_features: Mapping[str, int],
               rename: Callable[[str], str] = lambda m: m) -> dict[str, LoraSlot]:
    """Where each diffusers LoRA module goes in the file's layout: the fused module (renamed by `rename`)
    and the rows it fills there. `out_features[module]` is each diffusers linear's output width (read
    from the model, so grouped-query sizes are never guessed)."""
    out = {}
    for name in names:
        module = name.removeprefix("transformer.")
        link, index = layout.by_part.get(module, (None, 0))
        if link is None or not link.linear:
            raise ValueError(f"{name} is not a {layout.name} linear layer")
        sizes = [out_features[p] for p in link.parts]
        if len(sizes) == 1:
            out[name] = LoraSlot(rename(link.original), swap=link.swap)
        else:
            out[name] = LoraSlot(rename(link.original), sum(sizes[:index]), sizes[index], sum(sizes))
    return out


@functools.lru_cache(maxsize=8)
def _linear_widths(model_class: str, config_json: str) -> dict[str, int]:
    import diffusers
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = getattr(diffusers, model_class).from_config(json.loads(config_json))
    return {name: m.out_features for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def linear_widths(model_class: str, config: Mapping) -> dict[str, int]:
    """Each linear layer's output width in diffusers' `model_class` built from `config` on the meta device
    (what lora_slots needs: read from the model, never guessed)."""
    return _linear_widths(model_class, json.dumps(dict(config), sort_keys=True, default=str))
