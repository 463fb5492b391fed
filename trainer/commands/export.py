"""`lora-studio export` and `lora-studio resize`."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    e = sub.add_parser("export", help="put an adapter where a UI finds it, verified, with its sidecar")
    e.add_argument("adapter", type=Path, help="adapter .safetensors, or a run folder")
    e.add_argument("--format", choices=["kohya", "diffusers"], default="kohya")
    e.add_argument("--to", type=Path, help="A1111/Forge or ComfyUI install, InvokeAI root, or any folder")
    e.add_argument("--name", help="file name without extension (default: the adapter's output name)")
    e.add_argument("--preview", type=Path, help="sample image to use as preview and thumbnail")
    e.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="convert the weights")
    e.add_argument("--overwrite", action="store_true", help="replace existing files of the same name")
    e.add_argument("--json", action="store_true")
    r = sub.add_parser("resize", help="lower an adapter's rank by SVD and report the retained energy")
    r.add_argument("adapter", type=Path)
    r.add_argument("--rank", type=int, required=True)
    r.add_argument("--out", type=Path, help="output file (default: NAME-rankN.safetensors beside it)")
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--json", action="store_true")


def cmd_export(args) -> int:
    from trainer.export.exporter import export_adapter

    result = export_adapter(args.adapter, args.format, args.to, args.name, args.overwrite, args.preview,
                            args.dtype)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"exported for {result.ui.ui}: {result.adapter}")
    print(f"  verified: {result.report}")
    for extra in result.written[1:]:
        print(f"  wrote: {extra}")
    if result.ui.note:
        print(f"  next: {result.ui.note}")
    return 0


def cmd_resize(args) -> int:
    from trainer.export.resizer import resize_file

    out, energy = resize_file(args.adapter, args.rank, args.out, args.overwrite)
    worst = min(energy.values())
    mean = sum(energy.values()) / len(energy)
    if args.json:
        print(json.dumps({"out": str(out), "mean_energy": mean, "min_energy": worst, "modules": energy}))
    else:
        print(f"resized to rank {args.rank}: {out}")
        print(f"  retained energy: mean {mean:.1%}, worst module {worst:.1%} ({len(energy)} modules)")
    return 0
