"""GPU figures on real-size random-weight models: it/s and peak VRAM for SD1.5 at 512 px and SDXL at 1024 px,
per weight_dtype (bf16, fp8), gradient checkpointing off/on, and each memory-tier preset: the numbers that
replace the tiers' estimates and calibrate `lora-studio plan` (trainer/plan.py ACTIVATIONS, VAE_ENCODE).
With --archs flux1 zimage klein: the DiTs at 512 px in fp8 with checkpointing, without block swap and with
the count their small tier sets (performance.blocks_to_swap), from the files bench/realsize_flux.py and
bench/realsize_zimage_klein.py build (--dit-models, their default folder).

    .venv/bin/python bench/gpu.py --models /somewhere/outside/the/repo [--steps 20] [--quick] [--json]
    .venv/bin/python bench/gpu.py --models /tmp/lora-studio-bench/gpu --archs flux1 zimage klein

Needs a CUDA GPU. Each case is a fresh process running the real training loop in-process (so that
torch.cuda.max_memory_allocated covers the whole run: loading, caching, steps); it/s is measured over the
steps after the first three. `plan`'s GPU prediction is printed beside each measured peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.memory_dit import RUNS, comfyui_tree  # noqa: E402
from bench.realsize import build_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
RESOLUTION = {"sd15": 512, "sdxl": 1024, "flux1": 512, "zimage": 512, "klein": 512}
# DiT arch -> (its row in bench/memory_dit.py's RUNS, the tier whose blocks_to_swap the swapped row uses)
DITS = {"flux1": ("FLUX.1 dev fp8", "flux1-vram-12gb"), "zimage": ("Z-Image fp8", "zimage-vram-8gb"),
        "klein": ("FLUX.2 klein base 4B (bf16 file, fp8 weights)", "klein-vram-8gb")}
DIT_MODELS = Path("/tmp/lora-studio-bench")
TIERS = {"sd15": ["vram-6gb", "vram-8gb", "vram-12gb", "vram-16gb", "vram-24gb"],
         "sdxl": ["sdxl-vram-8gb", "sdxl-vram-12gb", "sdxl-vram-16gb", "sdxl-vram-24gb"]}


# Issue 19's CUDA paths, each against the run without it (bf16, no checkpointing): reading the loss back
# every step instead of every 10; no channels-last / SDPA order / pinned copies ("--plain-cuda", which turns
# trainer/accel.py's CUDA branches off in the child); regional torch.compile with its compile time.
SPEED_CASES = [{"label": "speed paths on (default)", "sets": []},
               {"label": "loss read back every step", "sets": ["performance.report_every_n_steps=1"]},
               {"label": "no channels-last, SDPA order, pinned copies", "sets": [], "plain_cuda": True},
               {"label": "performance.compile = true", "sets": ["performance.compile=true"]}]


def dit_cases(arch: str) -> list[dict]:
    from trainer.shared.config import load_preset

    swap = load_preset(DITS[arch][1]).performance.blocks_to_swap
    return [{"weight_dtype": "fp8", "checkpointing": True, "preset": None, "label": f"blocks_to_swap {n}",
             "sets": [f"performance.blocks_to_swap={n}", "dataset.max_token_length=256"]} for n in (0, swap)]


def dit_model(arch: str, models: Path, dit_models: Path) -> Path | None:
    """The transformer linked into a ComfyUI tree with its other files, or None when one is not built."""
    _, relative, others, _ = next(run for run in RUNS if run[0] == DITS[arch][0])
    files = [dit_models / f for f in (relative, *others)]
    if not all(f.exists() for f in files):
        return None
    tree = models / f"comfyui-{arch}"
    if tree.exists():
        return tree / "models" / "diffusion_models" / files[0].name
    return comfyui_tree(tree, files[0], files[1:])


def cases(arch: str, quick: bool) -> list[dict]:
    if arch in DITS:
        return dit_cases(arch)
    out = [{"weight_dtype": d, "checkpointing": gc, "preset": None}
           for d in ("bf16", "fp8") for gc in (False, True)]
    out += [{"weight_dtype": "bf16", "checkpointing": False, "preset": None, **speed} for speed in SPEED_CASES]
    if not quick:
        out += [{"weight_dtype": None, "checkpointing": None, "preset": tier} for tier in TIERS[arch]]
    return out


def _plain_cuda() -> None:
    """The child without trainer/accel.py's CUDA choices: what the speed rows compare against."""
    from trainer.run import accel

    accel.preferred_sdpa_backends = lambda device: []
    accel.channels_last = lambda unet, device: False
    accel.to_device = lambda tensor, device: tensor.to(device)
    for name in ("loop", "objective", "encode"):
        module = __import__(f"trainer.{name}", fromlist=["to_device"])
        module.to_device = accel.to_device


class _CompileLog:
    """Catches trainer/accel.py's 'compiled in X s' line."""

    def __init__(self):
        import logging

        self.seconds = float("nan")
        handler = logging.Handler()
        handler.emit = self._record
        logging.getLogger("trainer").addHandler(handler)
        logging.getLogger("trainer").setLevel(logging.INFO)

    def _record(self, record) -> None:
        message = record.getMessage()
        if "compiled in" in message:
            self.seconds = float(message.split("compiled in ")[1].split(" s")[0])


def child(args) -> None:
    """One case, in this process: train, then print figures as one JSON line."""
    import torch

    from tests.support.engine import RecordingSink
    from trainer.run.control import Control
    from trainer.run.loop import train
    from trainer.shared import config as config_mod

    if args.plain_cuda:
        _plain_cuda()
    compile_log = _CompileLog()
    cfg = config_mod.load_preset(args.preset) if args.preset else config_mod.TrainConfig()
    cfg = config_mod.apply_overrides(cfg, args.set)
    control, sink, stamps = Control(), RecordingSink(), []
    emit = sink.emit
    sink.emit = lambda event: (stamps.append((event.step, time.perf_counter())) if event.type == "progress"
                               else None, emit(event))
    torch.cuda.reset_peak_memory_stats()
    train(cfg, Path(args.out), sink, control)
    print(json.dumps({"it_s": steady_it_s(stamps), "peak_gb": torch.cuda.max_memory_allocated() / 1e9,
                      "compile_s": compile_log.seconds}))


def steady_it_s(stamps: list[tuple[int, float]]) -> float:
    """Steps per second after step 3, from (step, time) of each progress event. The events come in bursts
    (the loss is read back every 10 steps): from the end of the first burst past step 3 to the last event."""
    later = [(s, t) for s, t in stamps if s > 3]
    if len(later) < 2:
        return float("nan")
    s0, t0 = max((st for st in later if st[1] - later[0][1] < 1e-3), key=lambda st: st[0])
    s1, t1 = stamps[-1]
    return (s1 - s0) / (t1 - t0) if s1 > s0 else float("nan")


def run_case(models: Path, arch: str, case: dict, steps: int, model: Path | None = None) -> dict:
    data = models / f"data-{RESOLUTION[arch]}"
    _dataset(data, RESOLUTION[arch])
    sets = [f"model.path={model or models / f'{arch}.safetensors'}", f"dataset.path={data}",
            f"dataset.resolution={RESOLUTION[arch]}", f"schedule.max_steps={steps}",
            "sampling.every_n_steps=0", "saving.every_n_steps=0", "performance.device=cuda"]
    if case["weight_dtype"]:
        sets += [f"performance.weight_dtype={case['weight_dtype']}",
                 f"performance.gradient_checkpointing={str(case['checkpointing']).lower()}"]
    sets += case.get("sets", [])
    out = models / f"gpu-run-{arch}-{len(os.listdir(models))}"
    argv = [PY, __file__, "--child", "--out", str(out)] + (["--preset", case["preset"]] if case["preset"] else [])
    argv += ["--plain-cuda"] if case.get("plain_cuda") else []
    for item in sets:
        argv += ["--set", item]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        return {**case, "arch": arch, "error": proc.stderr.strip().splitlines()[-1][:200]}
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    plan = subprocess.run([PY, "-m", "trainer", "plan", "--demo", "--device", "cuda", "--json",
                           *sum((["--set", s] for s in sets), []),
                           *(["--preset", case["preset"]] if case["preset"] else [])],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    predicted = json.loads(plan.stdout)["gpu_gb"] if plan.returncode == 0 else float("nan")
    return {**case, "arch": arch, **figures, "plan_gb": predicted}


def _dataset(folder: Path, size: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(("red", "green", "blue", "gray")):
        if not (folder / f"img{i}.png").exists():
            Image.new("RGB", (size, size), colour).save(folder / f"img{i}.png")
            (folder / f"img{i}.txt").write_text(f"a {colour} square")


def table(rows: list[dict]) -> str:
    lines = ["| model | setting | it/s | peak VRAM GB | plan GB | compile s |", "|---|---|---|---|---|---|"]
    for r in rows:
        setting = r["preset"] or f"{r['weight_dtype']}, checkpointing {'on' if r['checkpointing'] else 'off'}"
        setting += f"; {r['label']}" if "label" in r else ""
        if "error" in r:
            lines.append(f"| {r['arch']} | {setting} | failed: {r['error']} | | | |")
        else:
            compile_s = f"{r['compile_s']:.1f}" if r.get("compile_s") == r.get("compile_s") else ""
            lines.append(f"| {r['arch']} | {setting} | {r['it_s']:.2f} | {r['peak_gb']:.2f} | {r['plan_gb']:.2f} "
                         f"| {compile_s} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, help="folder for the real-size files (outside the repo)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--archs", nargs="+", default=["sd15", "sdxl"], choices=sorted(RESOLUTION))
    p.add_argument("--dit-models", type=Path, default=DIT_MODELS,
                   help=f"the real-size DiT files bench/realsize_*.py built (default {DIT_MODELS})")
    p.add_argument("--quick", action="store_true", help="dtype x checkpointing only, no tier presets")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    p.add_argument("--plain-cuda", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU")
    models = args.models.resolve()
    models.mkdir(parents=True, exist_ok=True)
    rows = []
    for arch in args.archs:
        model = None
        if arch in DITS:
            model = dit_model(arch, models, args.dit_models)
            if model is None:
                rows.append({"arch": arch, "preset": None, "weight_dtype": "fp8", "checkpointing": True,
                             "error": f"no real-size files in {args.dit_models}: build them with bench/realsize_*.py"})
                continue
        else:
            build_checkpoint(arch, models / f"{arch}.safetensors")
        rows += [run_case(models, arch, case, args.steps, model) for case in cases(arch, args.quick)]
    print(table(rows))
    if args.json:
        print(json.dumps({"bench": "gpu", "rows": rows}))


if __name__ == "__main__":
    main()
