"""What a DiT or Qwen3 single file is, from its tensor names and shapes alone (a safetensors header).

Torch-free so `inspect` and the GUI's model picker can answer before anything heavy loads. It tells
apart the files issue 28 names, in either layout (the user's original names or diffusers'), with or
without ComfyUI's `model.diffusion_model.` prefix:

- Z-Image (6.15 B): per-block `adaLN_modulation.0` whose input is 256 wide (Lumina 2, the other model
  of this shape, has 1024) and a caption embedder. Base and Turbo have identical weights: the file name
  or the user must say which;
- FLUX.2 (`single_stream_modulation`, shared per stream): klein 4B (width 3072, text 7680 = 3 x
  Qwen3-4B), klein 9B (4096, 12288 = 3 x Qwen3-8B), [dev] 32 B (6144, 15360 = Mistral, `guidance_in`).
  diffusers 0.42.1 files every one of them as FLUX.2 [dev];
- FLUX.1 (per-block `img_mod`, `vector_in`): dev with `guidance_in`, schnell without;
- Qwen3 text encoders (`q_norm` in attention, which Qwen2.5 lacks): 4B (hidden 2560) or 8B (4096);
- the VAEs: FLUX.2's (32 latent channels and batch-norm statistics over the 2x2-patchified 128) or
  FLUX.1's AE (16 channels), which Z-Image decodes with.

`dtypes` (the header's dtype strings) is optional; with it the answer says whether weights are fp8 and
whether fp8 scales ride along (`.weight_scale` / `.scale_weight`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "")
FLUX2_VARIANTS = {(3072, 7680): ("flux2-klein-4b", "FLUX.2 [klein] 4B", "qwen3-4b"),
                  (4096, 12288): ("flux2-klein-9b", "FLUX.2 [klein] 9B", "qwen3-8b"),
                  (6144, 15360): ("flux2-dev", "FLUX.2 [dev] 32B", "mistral-small-3.2")}
QWEN3_SIZES = {2560: ("qwen3-4b", "Qwen3-4B"), 4096: ("qwen3-8b", "Qwen3-8B")}


@dataclass(frozen=True)
class Kind:
    """`family`: zimage | flux2 | flux1 | qwen3 | vae. `variant`: e.g. flux2-klein-4b, qwen3-8b. `layout`:
    original (the file's own names) or diffusers. `text_encoder`: the variant of Qwen3 (or other) the
    model reads. `fp8`: fp8 weights present; `scaled`: fp8 scales present."""
    family: str
    variant: str
    label: str
    layout: str
    prefix: str = ""
    text_encoder: str = ""
    fp8: bool = False
    scaled: bool = False


def identify(shapes: Mapping[str, Sequence[int]], dtypes: Mapping[str, str] | None = None) -> Kind | None:
    """The kind of a file from {tensor name: shape} (and optionally {name: dtype}), or None."""
    for detect in (_zimage, _flux2, _flux1, _qwen3, _vae):
        kind = detect(shapes)
        if kind is not None:
            return _with_precision(kind, shapes, dtypes)
    return None


def _strip(shapes: Mapping, marker: str) -> tuple[str, dict] | None:
    """(prefix, shapes without it) for the first prefix under which `marker` exists."""
    for prefix in PREFIXES:
        if prefix + marker in shapes:
            return prefix, {k[len(prefix):]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}
    return None


def _zimage(shapes: Mapping) -> Kind | None:
    for marker, layout in (("x_embedder.weight", "original"), ("all_x_embedder.2-1.weight", "diffusers")):
        found = _strip(shapes, marker)
        mod = found and found[1].get("layers.0.adaLN_modulation.0.weight")
        width = found and found[1][marker][0]
        # the time embedding is min(width, 256) wide (Lumina 2's min(width, 1024)): 256 at real size
        if found and mod and mod[1] == min(width, 256) and "cap_embedder.1.weight" in found[1]:
            caption = found[1]["cap_embedder.1.weight"][1]
            return Kind("zimage", "zimage", "Z-Image (Base or Turbo: the weights do not say which)", layout,
                        found[0], "qwen3-4b" if caption == 2560 else f"text features of width {caption}")
    return None


def _flux2(shapes: Mapping) -> Kind | None:
    for marker, layout, embed, text in (("single_stream_modulation.lin.weight", "original", "img_in", "txt_in"),
                                        ("single_stream_modulation.linear.weight", "diffusers", "x_embedder",
                                         "context_embedder")):
        found = _strip(shapes, marker)
        if found:
            s = found[1]
            key = (s[f"{embed}.weight"][0], s[f"{text}.weight"][1])
            variant, label, encoder = FLUX2_VARIANTS.get(key, ("flux2-unknown", f"FLUX.2 of width {key[0]}", ""))
            return Kind("flux2", variant, label, layout, found[0], encoder)
    return None


def _flux1(shapes: Mapping) -> Kind | None:
    for marker, layout, guidance in (("double_blocks.0.img_mod.lin.weight", "original", "guidance_in.in_layer.weight"),
                                     ("single_transformer_blocks.0.proj_mlp.weight", "diffusers",
                                      "time_text_embed.guidance_embedder.linear_1.weight")):
        found = _strip(shapes, marker)
        if found:
            dev = guidance in found[1]
            return Kind("flux1", "flux1-dev" if dev else "flux1-schnell",
                        "FLUX.1 [dev]" if dev else "FLUX.1 [schnell]", layout, found[0], "t5xxl")
    return None


def _qwen3(shapes: Mapping) -> Kind | None:
    found = _strip(shapes, "layers.0.self_attn.q_norm.weight")
    if not found or "embed_tokens.weight" not in found[1]:
        return None
    hidden = found[1]["embed_tokens.weight"][1]
    layers = 1 + max(int(m[1]) for k in found[1] if (m := re.match(r"layers\.(\d+)\.", k)))
    variant, label = QWEN3_SIZES.get(hidden, (f"qwen3-{hidden}", f"Qwen3 of hidden size {hidden}"))
    return Kind("qwen3", variant, f"{label}, {layers} layers", "original", found[0])


def _vae(shapes: Mapping) -> Kind | None:
    found = _strip(shapes, "decoder.conv_in.weight")
    if not found or len(found[1]["decoder.conv_in.weight"]) != 4:
        return None
    latent = found[1]["decoder.conv_in.weight"][1]
    layout = "diffusers" if any(k.startswith("decoder.up_blocks.") for k in found[1]) else "original"
    if latent == 32 and found[1].get("bn.running_mean") == (128,):
        return Kind("vae", "flux2-vae", "FLUX.2 VAE (32 channels, batch-norm statistics)", layout, found[0])
    if latent == 16:
        return Kind("vae", "flux1-ae", "FLUX.1 AE (16 channels; also Z-Image's VAE)", layout, found[0])
    return None


def _with_precision(kind: Kind, shapes: Mapping, dtypes: Mapping[str, str] | None) -> Kind:
    scaled = any(k.endswith((".weight_scale", ".scale_weight")) for k in shapes)
    fp8 = bool(dtypes) and any(str(d).upper().startswith("F8") or "float8" in str(d) for d in dtypes.values())
    return Kind(**{**kind.__dict__, "fp8": fp8 or scaled, "scaled": scaled})
