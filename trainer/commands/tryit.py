"""`lora-studio generate`, `lora-studio serve` and `lora-studio merge` (both forms)."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.shared.errors import UserError

WEIGHT_DTYPES = ("auto", "fp32", "bf16", "fp16", "fp8")   # performance.weight_dtype


def register(sub) -> None:
    g = sub.add_parser("generate", help="images from a base model plus LoRAs, with A1111 parameters text")
    _model_options(g)
    g.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT[:TE_WEIGHT]]",
                   help="a LoRA and its strength (UNet; text encoder defaults to the same); repeatable")
    g.add_argument("--lora-dir", action="append", default=[], type=Path,
                   help="folder where <lora:NAME:W> tags in the prompt are looked up")
    g.add_argument("--prompt", required=True)
    g.add_argument("--negative", default="")
    g.add_argument("--seed", type=int, default=-1, help="-1: random (written into the PNG)")
    g.add_argument("--steps", type=int, help="sampler steps (default: the model's own: SD and FLUX.1 dev 20, "
                   "Z-Image and klein base 28, Z-Image Turbo 8, schnell and klein 4)")
    g.add_argument("--cfg", type=float, help="CFG scale (default: the model's own: SD 7, FLUX.1 dev 3.5, Z-Image and "
                   "klein base 4, none for distilled models)")
    g.add_argument("--sampler", choices=["euler_a", "dpmpp_2m_karras"], default="euler_a")
    g.add_argument("--width", type=int)
    g.add_argument("--height", type=int)
    g.add_argument("--count", type=int, default=1, help="images, with seeds seed, seed+1, ...")
    g.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    g.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    s = sub.add_parser("serve", help="long-lived engine: base loaded once, JSON requests on stdin")
    _model_options(s, required=False)
    s.add_argument("--lora-dir", action="append", default=[], type=Path)
    m = sub.add_parser("merge", help="bake LoRAs into a checkpoint (BASE LORA[:W]...), or combine LoRAs "
                                     "(--loras A:W B:W)")
    m.add_argument("inputs", nargs="*", help="BASE then LORA[:WEIGHT]... to bake into a single-file checkpoint")
    m.add_argument("--loras", nargs="+", metavar="FILE[:WEIGHT]", help="combine these LoRAs into one LoRA")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--rank", type=int, help="combine: resize the result to this rank by SVD")
    m.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="merged checkpoint dtype")
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--json", action="store_true")
    m.add_argument("--weight-dtype", choices=WEIGHT_DTYPES, default="auto",
                   help="dtype the base loads in when it must be loaded whole (a diffusers folder)")


def _model_options(p, required: bool = True) -> None:
    p.add_argument("--model", required=required, help="base: demo:sd15, a diffusers folder or a .safetensors")
    p.add_argument("--weight-dtype", choices=WEIGHT_DTYPES, default="auto",
                   help="dtype of the base weights (performance.weight_dtype)")


def cmd_generate(args) -> int:
    from trainer.shared.generate_params import Request
    from trainer.tryit.engine import Generator, load_base

    req = Request(prompt=args.prompt, negative=args.negative, seed=args.seed, steps=args.steps, cfg=args.cfg,
                  sampler=args.sampler, width=args.width, height=args.height, count=args.count,
                  loras=[_lora_dict(text) for text in args.lora], out=str(args.out))
    try:
        req.check()
    except ValueError as exc:  # the request's own range checks (shared with serve, which reports them per job)
        raise UserError(str(exc), "see lora-studio generate --help for the ranges") from None
    generator = Generator(load_base(args.model, args.weight_dtype), lora_dirs=args.lora_dir)
    generator.generate(req, on_image=lambda image: _print_image(image, args.json))
    return 0


def _lora_dict(text: str) -> dict:
    from trainer.tryit.loras import parse_lora_arg

    return parse_lora_arg(text).to_dict()


def _print_image(image, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"path": str(image.path), "seed": image.seed, "parameters": image.parameters}),
              flush=True)
    else:
        print(image.path, flush=True)


def cmd_serve(args) -> int:
    from trainer.tryit.serve import serve

    return serve(args.model, args.weight_dtype, args.lora_dir)


def cmd_merge(args) -> int:
    if args.loras and args.inputs:
        raise UserError("merge takes either BASE LORA... or --loras A B, not both",
                        "bake into a checkpoint: merge BASE LORA:W --out F; combine: merge --loras A B --out F")
    result = _combine(args) if args.loras else _bake(args)
    print(json.dumps(result, indent=2) if args.json else result["summary"])
    return 0


def _combine(args) -> dict:
    from trainer.tryit.combine import combine_files
    from trainer.tryit.loras import parse_lora_arg

    return combine_files([parse_lora_arg(t) for t in args.loras], args.out, args.rank, args.overwrite)


def _bake(args) -> dict:
    from trainer.tryit.bake import bake_checkpoint
    from trainer.tryit.loras import parse_lora_arg

    if len(args.inputs) < 2:
        raise UserError("merge needs a base checkpoint and at least one LoRA",
                        "lora-studio merge BASE.safetensors LORA.safetensors:0.8 --out MERGED.safetensors")
    return bake_checkpoint(args.inputs[0], [parse_lora_arg(t) for t in args.inputs[1:]], args.out,
                           args.dtype, args.overwrite, weight_dtype=args.weight_dtype)
