"""Peak RSS of the issues' "done when" runs on real-size DiT files: `train --demo` on the user's file layout
(a transformer with its other files beside it), 64 px, 32 caption tokens, 2 steps, no previews, fp8 weights;
then `generate` with the LoRA that run exported (2 steps, 64 px): that it makes an image, and its peak RSS.

    .venv/bin/python bench/realsize_flux.py                       # builds /tmp/lora-studio-bench/flux once
    .venv/bin/python bench/realsize_zimage_klein.py --only z_image_fp8_e4m3fn --only qwen_3_4b \
        --only flux2-vae --only flux-2-klein-base-4b --only flux-2-klein-base-4b-fp8  # and .../zk
    .venv/bin/python bench/memory_dit.py --models /tmp/lora-studio-bench

Every figure comes from `/usr/bin/time -v` around a fresh process (Maximum resident set size), GB = 10^9
bytes; CPU seconds beside wall seconds, since only those compare on a busy machine. Never a test: minutes of
CPU and ~20 GB of files.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (row, transformer, its other files (text encoders, then the VAE), peak RSS target in GB from the issue);
# paths relative to --models, as bench/realsize_flux.py and bench/realsize_zimage_klein.py write them
RUNS = [
    ("FLUX.1 dev fp8", "flux/flux1-dev.safetensors",
     ["flux/clip_l.safetensors", "flux/t5xxl_fp8_e4m3fn.safetensors", "flux/ae.safetensors"], 15.0),
    ("Z-Image fp8", "zk/z_image_fp8_e4m3fn.safetensors", ["zk/qwen_3_4b.safetensors", "flux/ae.safetensors"], 10.0),
    ("FLUX.2 klein base 4B (bf16 file, fp8 weights)", "zk/flux-2-klein-base-4b.safetensors",
     ["zk/qwen_3_4b.safetensors", "zk/flux2-vae.safetensors"], 10.0),
    ("FLUX.2 klein base 4B (BFL's scaled fp8 file)", "zk/flux-2-klein-base-4b-fp8.safetensors",
     ["zk/qwen_3_4b.safetensors", "zk/flux2-vae.safetensors"], 10.0),
]
ARGS = ["--set", "dataset.resolution=64", "--set", "dataset.max_token_length=32", "--set", "schedule.max_steps=2",
        "--set", "sampling.every_n_steps=0", "--set", "performance.weight_dtype=fp8"]


def comfyui_tree(out: Path, model: Path, others: list[Path]) -> Path:
    """The files linked into ComfyUI's folders (models/diffusion_models, text_encoders, vae), where users keep
    them and where the engine looks for a model's other files."""
    home = out / "models" / "diffusion_models"
    home.mkdir(parents=True)
    (home / model.name).symlink_to(model)
    for other in others:
        folder = out / "models" / ("vae" if other is others[-1] else "text_encoders")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / other.name).symlink_to(other)
    return home / model.name


def timed(cmd: list[str]) -> dict:
    """Run `cmd` under /usr/bin/time -v: whether it succeeded, peak RSS (GB), wall and CPU seconds."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=ROOT, capture_output=True, text=True)
    report = proc.stderr

    def number(label: str) -> float:
        match = re.search(rf"{label}: ([\d.:]+)", report)
        return float(match[1]) if match and ":" not in match[1] else 0.0

    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", report)
    parts = [float(x) for x in wall[1].split(":")] if wall else [0.0]
    seconds = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    return {"ok": proc.returncode == 0, "error": report[-2000:], "stdout": proc.stdout,
            "peak_gb": number("Maximum resident set size \\(kbytes\\)") * 1024 / 1e9, "wall_s": seconds,
            "cpu_s": number("User time \\(seconds\\)") + number("System time \\(seconds\\)")}


def measure(model: Path, others: list[Path]) -> tuple[dict, dict | None]:
    """The training run, then `generate` with the LoRA it exported (2 steps, 64 px): (train, generate)."""
    out = Path(tempfile.mkdtemp(prefix="lora-studio-dit-"))
    model = comfyui_tree(out, model, others)
    train = timed([sys.executable, "-m", "trainer", "train", "--demo", "--set", f"model.path={model}", *ARGS,
                   "--out", str(out / "run")])
    adapters = sorted((out / "run").glob("*.safetensors"))
    if not train["ok"] or not adapters:
        return train, None
    generate = timed([sys.executable, "-m", "trainer", "generate", "--model", str(model), "--weight-dtype", "fp8",
                      "--lora", f"{adapters[0]}:1.0", "--prompt", "a photo of zkx", "--steps", "2", "--width", "64",
                      "--height", "64", "--out", str(out / "images")])
    generate["images"] = len(list((out / "images").glob("*.png")))
    return train, generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True, help="the benches' folder of real-size files")
    p.add_argument("--only", action="append", help="rows whose name contains this (repeatable)")
    args = p.parse_args()
    print("| run | train: peak RSS GB | target | wall s | CPU s | generate (LoRA, 2 steps): peak RSS GB, s, "
          "images |\n|---|---|---|---|---|---|")
    for name, relative, others, target in RUNS:
        if args.only and not any(o.lower() in name.lower() for o in args.only):
            continue
        files = [args.models / f for f in (relative, *others)]
        missing = [f for f in files if not f.exists()]
        if missing:
            print(f"| {name} | (no {missing[0]}: build it with bench/realsize_*.py) | ≤ {target} | | |")
            continue
        m, g = measure(files[0], files[1:])
        verdict = "✓" if m["ok"] and m["peak_gb"] <= target else "✗"
        for run in (m, g):
            if run and not run["ok"]:
                print(run["error"], file=sys.stderr)
        made = f"{g['peak_gb']:.2f}, {g['wall_s']:.0f}, {g['images']}" if g else "(no adapter)"
        print(f"| {name} | {m['peak_gb']:.2f} | ≤ {target} {verdict} | {m['wall_s']:.0f} | {m['cpu_s']:.0f} | {made} |",
              flush=True)


if __name__ == "__main__":
    main()
