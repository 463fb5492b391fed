"""Memory on real-size models: peak RSS to load SD1.5 / SDXL single files, and to train 2 steps at 64 px,
per performance.weight_dtype, with `lora-studio plan`'s prediction beside each figure.

    .venv/bin/python bench/memory.py --models /somewhere/outside/the/repo        # builds 2 + 6.5 GB files once
    .venv/bin/python bench/memory.py --models DIR --reuse    # keep measured rows, recompute plan's predictions
    .venv/bin/python bench/memory.py --models DIR --baseline sd15   # also the old fp32 loader

Every figure comes from `/usr/bin/time -v` around a fresh process (Maximum resident set size). GB = 10^9
bytes. Load time is shown as wall and CPU seconds: on a busy machine only the CPU time compares.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.realsize import build_checkpoint, frozen_parameter_count  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
GB = 1e9
LOAD = "import sys; from trainer.models.load import load_base_model; load_base_model(sys.argv[1], weight_dtype=sys.argv[2])"
BASELINE = """
import sys, torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from trainer.models.assets import config_folder, load_tokenizer
from trainer.models.detect import inspect_base_model
info = inspect_base_model(sys.argv[1])  # the loader before weight_dtype: diffusers' from_single_file in fp32
kw = {"tokenizer": load_tokenizer()}
if info.arch == "sdxl":
    cls, kw["tokenizer_2"] = StableDiffusionXLPipeline, load_tokenizer(second=True)
else:
    cls = StableDiffusionPipeline
    kw.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
cls.from_single_file(sys.argv[1], config=str(config_folder(info.config_name())), local_files_only=True,
                     torch_dtype=torch.float32, **kw)
"""


def timed(args: list[str]) -> dict:
    """Run a command under /usr/bin/time -v; peak RSS, wall and CPU seconds."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "LORA_STUDIO_SKIP_RAM_CHECK": "1"}
    proc = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    values = dict(line.strip().rsplit(": ", 1) for line in proc.stderr.splitlines() if ": " in line)
    field = lambda name: next(v for k, v in values.items() if k.startswith(name))  # noqa: E731
    wall = sum(float(x) * 60**i for i, x in enumerate(reversed(field("Elapsed").split(":"))))
    return {"peak_gb": int(field("Maximum resident set size")) * 1024 / GB, "wall_s": wall,
            "cpu_s": float(field("User time")) + float(field("System time"))}


def make_dataset(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(("red", "blue")):
        Image.new("RGB", (64, 64), colour).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"a {colour} square")
    return folder


def write_config(models: Path, arch: str, dtype: str, data: Path) -> Path:
    path = models / f"bench-{arch}-{dtype}.toml"
    path.write_text(f'[model]\npath = "{models / f"{arch}.safetensors"}"\n'
                    f'[dataset]\npath = "{data}"\nresolution = 64\n[lora]\nrank = 16\n'
                    f'[schedule]\nmax_steps = 2\n[sampling]\nevery_n_steps = 0\n[saving]\nevery_n_steps = 0\n'
                    f'[performance]\nweight_dtype = "{dtype}"\n')
    return path


def plan_ram(config: Path) -> float:
    out = subprocess.run([PY, "-m", "trainer", "plan", str(config), "--json", "--device", "cpu"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        return float("nan")
    return json.loads(out.stdout)["ram_gb"]


def measure(models: Path, arch: str, dtype: str, data: Path) -> dict:
    checkpoint = str(models / f"{arch}.safetensors")
    config = write_config(models, arch, dtype, data)
    run_dir = models / f"run-{arch}-{dtype}"
    subprocess.run(["rm", "-rf", str(run_dir)])
    load = timed([PY, "-c", LOAD, checkpoint, dtype])
    train = timed([PY, "-m", "trainer", "train", str(config), "--out", str(run_dir)])
    return {"arch": arch, "dtype": dtype, "load": load, "train": train}


def targets(arch: str, dtype: str) -> dict:
    bf16_weights = sum(frozen_parameter_count(arch).values()) * 2 / GB
    out = {}
    if dtype == "bf16":
        out["load_gb"] = 1.3 * bf16_weights
        if arch == "sdxl":
            out["train_gb"] = 9.5
    if dtype == "fp8" and arch == "sdxl":
        out["train_gb"] = 6.0
    return out


def table(rows: list[dict]) -> str:
    lines = ["| model | weight_dtype | load s (wall / CPU) | load peak GB | target | train 2 steps peak GB | target "
             "| plan RAM GB | plan error |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = targets(r["arch"], r["dtype"]) if r["dtype"] != "baseline fp32" else {}
        error = (r["plan_gb"] - r["train"]["peak_gb"]) / r["train"]["peak_gb"] if r.get("plan_gb") else None
        lines.append(
            f"| {r['arch']} | {r['dtype']} | {r['load']['wall_s']:.0f} / {r['load']['cpu_s']:.0f} "
            f"| {r['load']['peak_gb']:.2f} | {_target(r['load']['peak_gb'], t.get('load_gb'))} "
            f"| {_gb(r['train'])} | {_target(r['train'] and r['train']['peak_gb'], t.get('train_gb'))} "
            f"| {r.get('plan_gb', float('nan')):.2f} | {'' if error is None else f'{error:+.0%}'} |")
    return "\n".join(lines)


def _gb(measured: dict | None) -> str:
    return f"{measured['peak_gb']:.2f}" if measured else "–"


def _target(value, target) -> str:
    if target is None or not value:
        return ""
    return f"≤ {target:.1f} {'✓' if value <= target else '✗'}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True, help="folder for the real-size files (outside the repo)")
    p.add_argument("--archs", nargs="+", default=["sd15", "sdxl"])
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp8"])
    p.add_argument("--baseline", nargs="*", default=[], metavar="ARCH",
                   help="also load these with diffusers' from_single_file in fp32, the loader before "
                        "weight_dtype (SDXL needs ~21 GB of RAM)")
    p.add_argument("--reuse", action="store_true", help="reuse measured rows from an earlier run")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    models = args.models.resolve()
    models.mkdir(parents=True, exist_ok=True)
    results_file = models / "memory-results.json"
    old = {(r["arch"], r["dtype"]): r for r in json.loads(results_file.read_text())} \
        if args.reuse and results_file.exists() else {}
    data = make_dataset(models / "data")
    rows = []
    for arch in args.archs:
        build_checkpoint(arch, models / f"{arch}.safetensors")
        for dtype in args.dtypes:
            row = old.get((arch, dtype)) or measure(models, arch, dtype, data)
            row["plan_gb"] = plan_ram(write_config(models, arch, dtype, data))
            rows.append(row)
            results_file.write_text(json.dumps(rows + [r for k, r in old.items() if r not in rows], indent=1))
        if arch in args.baseline:
            load = old.get((arch, "baseline fp32"), {}).get("load") or \
                timed([PY, "-c", BASELINE, str(models / f"{arch}.safetensors")])
            rows.append({"arch": arch, "dtype": "baseline fp32", "load": load, "train": None})
    results_file.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    if args.json:
        print(json.dumps({"bench": "memory", "rows": rows}))


if __name__ == "__main__":
    main()
