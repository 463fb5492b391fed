"""Real-size random-weight FLUX.1 files, in the layout users download them, for the memory and GPU
benchmarks (never for tests or CI).

The files ComfyUI users keep, under the same names:
  flux1-dev.safetensors         BFL transformer, bare BFL names, guidance_in, fp8 e4m3fn (11.9 GB)
  flux1-dev-bf16.safetensors    the same in bf16 as BFL ship it (23.8 GB; only with --only or --all)
  flux1-schnell.safetensors     schnell transformer (no guidance_in), fp8 e4m3fn (11.9 GB)
  ae.safetensors                BFL's AE with LDM names (encoder.down.0.block.0.conv1.weight, ...), fp32
  clip_l.safetensors            transformers CLIPTextModel names (text_model.encoder.layers.N...), fp16
  t5xxl_fp8_e4m3fn.safetensors  transformers T5EncoderModel names, every tensor fp8 e4m3fn (4.9 GB)
  t5xxl_fp16.safetensors        the same in fp16 (9.8 GB)
Like ComfyUI's text-encoder files, the T5 files hold the embedding twice (`shared.weight` and its tied
copy `encoder.embed_tokens.weight`): that is what makes theirs 4.89 / 9.79 GB rather than 4.76 / 9.52.

Shapes come from the shipped configs (assets/configs/flux1-dev, flux1-schnell) built on the meta device;
the transformer's BFL names from trainer/models/bfl_layout.py and the AE's from trainer/families/ldm_layout.vae_key,
each checked on meta tensors against diffusers' own single-file converters before anything is written.
Each tensor is drawn, written and dropped in turn (trainer/models/safetensors_stream.py), so no model is
ever held in memory. Random weights give noise images, but load and train like the real files.

  python bench/realsize_flux.py                  the dev set: flux1-dev, ae, clip_l, t5xxl_fp8_e4m3fn
  python bench/realsize_flux.py --only ae --only clip_l
  python bench/realsize_flux.py --all            every file above
  python bench/realsize_flux.py --check          read back the headers: keys, dtypes, GB, plan agreement
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
OUT = Path("/tmp/lora-studio-bench/flux")
FP8 = torch.float8_e4m3fn
# file stem: (config folder, component, dtype on disk)
FILES = {
    "flux1-dev": ("flux1-dev", "transformer", FP8),
    "flux1-dev-bf16": ("flux1-dev", "transformer", torch.bfloat16),
    "flux1-schnell": ("flux1-schnell", "transformer", FP8),
    "ae": ("flux1-dev", "vae", torch.float32),
    "clip_l": ("flux1-dev", "text_encoder", torch.float16),
    "t5xxl_fp8_e4m3fn": ("flux1-dev", "text_encoder_2", FP8),
    "t5xxl_fp16": ("flux1-dev", "text_encoder_2", torch.float16),
}
DEFAULT = ["flux1-dev", "ae", "clip_l", "t5xxl_fp8_e4m3fn"]
DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", FP8: "F8_E4M3"}


def meta_component(folder: str, component: str):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    path = CONFIGS / folder / component
    with init_empty_weights():
        if component == "transformer":
            return FluxTransformer2DModel.from_config(json.loads((path / "config.json").read_text()))
        if component == "vae":
            return AutoencoderKL.from_config(json.loads((path / "config.json").read_text()))
        if component == "text_encoder":
            return CLIPTextModel(CLIPTextConfig.from_pretrained(str(path)))
        return T5EncoderModel(T5Config.from_pretrained(str(path)))


def plan(stem: str) -> dict[str, tuple]:
    """{key: shape} of the file `stem` in its users' layout, in file order."""
    folder, component, _ = FILES[stem]
    model = meta_component(folder, component)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if component == "transformer":
        shapes = _transformer_layout(model, shapes)
    elif component == "vae":
        shapes = _ae_layout(model, shapes)
    elif component == "text_encoder":  # transformers 5 dropped the `text_model.` level that the files keep
        shapes = {"text_model." + k.removeprefix("text_model."): s for k, s in shapes.items()}
    return dict(sorted(shapes.items()))


def _transformer_layout(model, shapes: dict) -> dict:
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from trainer.models.bfl_layout import diffusers_to_bfl

    bfl = diffusers_to_bfl(shapes)
    back = convert_flux_transformer_checkpoint_to_diffusers(_meta(bfl))
    _same(back, shapes, "diffusers' FLUX converter")
    return bfl


def _ae_layout(model, shapes: dict) -> dict:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from trainer.families.ldm_layout import vae_key

    # BFL's AE has the LDM names without a prefix; its mid-block attention projections are 1x1 convolutions
    ldm = {vae_key(k): (s + (1, 1) if "mid_block.attentions" in k and len(s) == 2 else s)
           for k, s in shapes.items()}
    _same(convert_ldm_vae_checkpoint(_meta(ldm), dict(model.config)), shapes, "diffusers' LDM VAE converter")
    return ldm


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
    shapes, dtype = plan(stem), FILES[stem][2]
    generator = torch.Generator().manual_seed(seed)
    specs = {k: (dtype, s) for k, s in shapes.items()}
    metadata = {"lora_studio.bench": f"random weights in the layout of {stem}.safetensors, not a model"}
    out.mkdir(parents=True, exist_ok=True)
    stream_safetensors(path, specs, lambda key: _random(key, shapes[key], dtype, generator), metadata)
    return path, time.perf_counter() - start


def _random(key: str, shape: tuple, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    if key.endswith("bias"):
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 1:  # norm scales
        return torch.ones(shape, dtype=dtype)
    return (torch.randn(shape, generator=generator) * 0.02).to(dtype)


def read_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        return json.loads(fh.read(size))


def check(stem: str, out: Path) -> str:
    path = out / f"{stem}.safetensors"
    if not path.exists():
        return f"{stem:18s} not built"
    header = read_header(path)
    header.pop("__metadata__", None)
    dtypes = Counter(v["dtype"] for v in header.values())
    expected = {k: {"dtype": DTYPE_NAMES[FILES[stem][2]], "shape": list(s)} for k, s in plan(stem).items()}
    agrees = {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in header.items()} == expected
    return (f"{stem:18s} {len(header):5d} keys  {dict(dtypes)}  {path.stat().st_size / 1e9:7.3f} GB  "
            f"{'matches the plan' if agrees else 'DIFFERS FROM THE PLAN'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT, help=f"folder for the files (default {OUT})")
    p.add_argument("--only", action="append", choices=sorted(FILES), help="build just this file (repeatable)")
    p.add_argument("--all", action="store_true", help="every file, bf16 and fp16 ones included")
    p.add_argument("--check", action="store_true", help="read the headers back instead of building")
    args = p.parse_args()
    stems = args.only or (list(FILES) if args.all else DEFAULT)
    for stem in stems:
        if args.check:
            print(check(stem, args.out))
            continue
        path, seconds = build(stem, args.out)
        note = f"built in {seconds:.0f} s" if seconds else "already there"
        print(f"{path}  {path.stat().st_size / 1e9:.3f} GB  {note}", flush=True)


if __name__ == "__main__":
    main()
