"""Real-size random-weight Z-Image and FLUX.2 klein files, in the layout users download them, for the memory
and GPU benchmarks (never for tests or CI).

The files ComfyUI users keep, under the same names, in /tmp/lora-studio-bench/zk:
  z_image_bf16.safetensors               Z-Image (Base; Turbo is the same layout), ComfyUI's names
                                          (`layers.N.attention.qkv` fused, ...), bf16 (12.3 GB; --only/--all)
  z_image_fp8_e4m3fn.safetensors         the same with every matrix in fp8 e4m3fn, no scales (vectors bf16)
  flux-2-klein-base-4b.safetensors       klein base 4B, BFL names, bf16 (7.75 GB; --only/--all)
  flux-2-klein-base-4b-fp8.safetensors   the block matrices in fp8 e4m3fn, each with a scalar F32
                                          `.weight_scale` and `.input_scale` as BFL's fp8 files carry; the rest bf16
  qwen_3_4b.safetensors                  Qwen3-4B, transformers names (`model.layers.N...`, no lm_head: tied), bf16
  flux2-vae.safetensors                  the FLUX.2 VAE, BFL names (quant convs inside encoder/decoder, 1x1-conv
                                          attention), fp32, with `bn.running_mean/var/num_batches_tracked`
Z-Image's VAE is FLUX.1's `ae.safetensors`, which bench/realsize_flux.py builds into
/tmp/lora-studio-bench/flux; it is reused, not rebuilt (`--check` reports it).

Shapes come from the shipped configs (assets/configs/zimage, flux2-klein-4b) built on the meta device; the
names from trainer/models/zimage_layout.py and flux2_layout.py, each checked on meta tensors against
diffusers' own converters (its Z-Image and FLUX.2 single-file converters; its LDM VAE converter for the VAE)
before anything is written. Each tensor is drawn, written and dropped in turn
(trainer/models/safetensors_stream.py), so no model is ever held in memory; the largest single tensor
(Qwen3's 151936 x 2560 embedding) needs about 2.4 GB while it is drawn. Random weights give noise images, but
load and train like the real files.

  python bench/realsize_zimage_klein.py                 the default set: both fp8 transformers, qwen_3_4b, flux2-vae
  python bench/realsize_zimage_klein.py --only z_image_bf16
  python bench/realsize_zimage_klein.py --all           every file above
  python bench/realsize_zimage_klein.py --check         read the headers back: keys, dtypes, GB, plan, detection
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIGS = ROOT / "assets" / "configs"
OUT = Path("/tmp/lora-studio-bench/zk")
FLUX_AE = Path("/tmp/lora-studio-bench/flux/ae.safetensors")
FP8 = torch.float8_e4m3fn
FP8_SCALE = 0.02 * 4 / 448  # the random weights' std x 4 maps to e4m3fn's largest value
# file stem: (config folder, component, precision)
FILES = {
    "z_image_bf16": ("zimage", "transformer", "bf16"),
    "z_image_fp8_e4m3fn": ("zimage", "transformer", "fp8"),
    "flux-2-klein-base-4b": ("flux2-klein-4b", "transformer", "bf16"),
    "flux-2-klein-base-4b-fp8": ("flux2-klein-4b", "transformer", "fp8-scaled"),
    "qwen_3_4b": ("flux2-klein-4b", "text_encoder", "bf16"),
    "flux2-vae": ("flux2-klein-4b", "vae", "fp32"),
}
DEFAULT = ["z_image_fp8_e4m3fn", "flux-2-klein-base-4b-fp8", "qwen_3_4b", "flux2-vae"]
DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", FP8: "F8_E4M3", torch.int64: "I64"}


def meta_component(folder: str, component: str):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path = CONFIGS / folder / component
    with init_empty_weights(include_buffers=True):
        if component == "text_encoder":
            return Qwen3ForCausalLM(Qwen3Config.from_pretrained(str(path)))
        config = json.loads((path / "config.json").read_text())
        if component == "vae":
            return AutoencoderKLFlux2.from_config(config)
        cls = ZImageTransformer2DModel if folder == "zimage" else Flux2Transformer2DModel
        return cls.from_config(config)


def plan(stem: str) -> dict[str, tuple[torch.dtype, tuple]]:
    """{key: (dtype, shape)} of the file `stem` in its users' layout, in file order."""
    folder, component, precision = FILES[stem]
    model = meta_component(folder, component)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if component == "transformer":
        shapes = _zimage_layout(shapes) if folder == "zimage" else _klein_layout(shapes)
    elif component == "vae":
        shapes = _vae_layout(model, shapes)
    else:  # Qwen3-4B ties lm_head to the embedding: its files store the table once
        shapes.pop("lm_head.weight")
    return dict(sorted(_precision(shapes, precision, component).items()))


def _precision(shapes: dict, precision: str, component: str) -> dict:
    if component == "vae":
        return {k: (torch.int64 if k.endswith("num_batches_tracked") else torch.float32, s) for k, s in shapes.items()}
    if precision == "bf16":
        return {k: (torch.bfloat16, s) for k, s in shapes.items()}
    if precision == "fp8":  # a plain cast: matrices fp8, vectors and pad tokens bf16
        return {k: (FP8 if len(s) == 2 and k.endswith(".weight") else torch.bfloat16, s) for k, s in shapes.items()}
    out = {}
    for key, shape in shapes.items():  # BFL's scaled fp8: the blocks' matrices, each with its scales
        if key.endswith(".weight") and len(shape) == 2 and key.startswith(("double_blocks.", "single_blocks.")):
            module = key.removesuffix(".weight")
            out.update({key: (FP8, shape), f"{module}.weight_scale": (torch.float32, ()),
                        f"{module}.input_scale": (torch.float32, ())})
        else:
            out[key] = (torch.bfloat16, shape)
    return out


def _zimage_layout(shapes: dict) -> dict:
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers

    from trainer.models import zimage_layout

    original = zimage_layout.to_original(shapes)
    _same(convert_z_image_transformer_checkpoint_to_diffusers(_meta(original)), shapes, "diffusers' Z-Image converter")
    return original


def _klein_layout(shapes: dict) -> dict:
    from diffusers.loaders.single_file_utils import convert_flux2_transformer_checkpoint_to_diffusers

    from trainer.models import flux2_layout

    bfl = flux2_layout.to_original(shapes)
    _same(convert_flux2_transformer_checkpoint_to_diffusers(_meta(bfl)), shapes, "diffusers' FLUX.2 converter")
    return bfl


def _vae_layout(model, shapes: dict) -> dict:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from trainer.models import flux2_layout

    bfl = flux2_layout.vae_to_original(shapes)
    # diffusers' LDM converter knows every name but the quant convs' place and the batch-norm statistics
    ldm = {k.replace("encoder.quant_conv", "quant_conv").replace("decoder.post_quant_conv", "post_quant_conv"): s
           for k, s in bfl.items() if not k.startswith("bn.")}
    _same(convert_ldm_vae_checkpoint(_meta(ldm), dict(model.config)),
          {k: s for k, s in shapes.items() if not k.startswith("bn.")}, "diffusers' LDM VAE converter")
    return bfl


def _meta(shapes: dict) -> dict:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def _same(converted: dict, expected: dict, who: str) -> None:
    got = {k: tuple(v.shape) for k, v in converted.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        raise AssertionError(f"{who} disagrees: missing {missing[:3]}, extra {extra[:3]}")


def build(stem: str, out: Path, seed: int = 0) -> tuple[Path, float]:
    """Write `out/stem.safetensors` unless it is there already; (path, seconds spent)."""
    from trainer.models.safetensors_stream import stream_safetensors

    path = out / f"{stem}.safetensors"
    if path.exists():
        return path, 0.0
    start = time.perf_counter()
    specs = plan(stem)
    generator = torch.Generator().manual_seed(seed)
    metadata = {"lora_studio.bench": f"random weights in the layout of {stem}.safetensors, not a model"}
    out.mkdir(parents=True, exist_ok=True)
    scaled = {k.removesuffix("_scale") for k in specs if k.endswith(".weight_scale")}  # weights stored / scale
    stream_safetensors(path, specs, lambda key: _random(key, *specs[key], generator, key in scaled), metadata)
    return path, time.perf_counter() - start


def _random(key: str, dtype: torch.dtype, shape: tuple, generator: torch.Generator, scaled: bool) -> torch.Tensor:
    if dtype == torch.int64 or key.endswith("bias"):
        return torch.zeros(shape, dtype=dtype)
    if key.endswith("_scale"):  # every fp8 matrix shares one scale: the draws below all have std 0.02
        return torch.tensor(FP8_SCALE if key.endswith("weight_scale") else 1.0, dtype=dtype)
    if len(shape) == 1:  # norm scales, batch-norm statistics
        return torch.ones(shape, dtype=dtype)
    values = torch.randn(shape, generator=generator) * 0.02
    if dtype == FP8:  # scaled files store weight / scale; plain fp8 files the weights themselves
        return (values / FP8_SCALE if scaled else values).to(dtype)
    return values.to(dtype)


def read_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        return json.loads(fh.read(size))


def check(stem: str, out: Path) -> str:
    from trainer.models import dit_detect

    path = out / f"{stem}.safetensors"
    if not path.exists():
        return f"{stem:26s} not built"
    header = read_header(path)
    header.pop("__metadata__", None)
    expected = {k: {"dtype": DTYPE_NAMES[d], "shape": list(s)} for k, (d, s) in plan(stem).items()}
    agrees = {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in header.items()} == expected
    kind = dit_detect.identify({k: v["shape"] for k, v in header.items()}, {k: v["dtype"] for k, v in header.items()})
    what = f"{kind.variant}{' fp8' if kind.fp8 else ''}{' scaled' if kind.scaled else ''}" if kind else "-"
    return (f"{stem:26s} {len(header):5d} keys  {dict(Counter(v['dtype'] for v in header.values()))}  "
            f"{path.stat().st_size / 1e9:7.3f} GB  {'matches the plan' if agrees else 'DIFFERS FROM THE PLAN'}  "
            f"detected: {what}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT, help=f"folder for the files (default {OUT})")
    p.add_argument("--only", action="append", choices=sorted(FILES), help="build just this file (repeatable)")
    p.add_argument("--all", action="store_true", help="every file, the bf16 transformers included")
    p.add_argument("--check", action="store_true", help="read the headers back instead of building")
    args = p.parse_args()
    stems = args.only or (list(FILES) if args.all else DEFAULT)
    for stem in stems:
        if args.check:
            print(check(stem, args.out), flush=True)
            continue
        path, seconds = build(stem, args.out)
        note = f"built in {seconds:.0f} s" if seconds else "already there"
        print(f"{path}  {path.stat().st_size / 1e9:.3f} GB  {note}", flush=True)
    if args.check:
        there = f"{FLUX_AE.stat().st_size / 1e9:.3f} GB, reused" if FLUX_AE.exists() else "not built: see realsize_flux.py"
        print(f"{'ae (Z-Image VAE)':26s} {FLUX_AE}  {there}")


if __name__ == "__main__":
    main()
