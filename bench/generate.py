"""Try-it figures: seconds to the first image after switching LoRA in a running `serve` (no base reload) vs a
cold start, and the peak RSS of `merge` (baking a LoRA into a real-size single-file checkpoint).

    .venv/bin/python bench/generate.py                          # serve on demo:sd15 (tiny), random LoRAs
    .venv/bin/python bench/generate.py --model BASE.safetensors --config sd15 --steps 20
    .venv/bin/python bench/generate.py --merge sdxl --work /big/disk   # builds a 6.5 GB random SDXL first

Prints a table and one JSON line ({"bench": "generate", ...}). Random weights: noise images, real timings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FAMILY = {"tiny-sd15": "sd1", "tiny-sdxl": "sdxl", "sd15": "sd1", "sdxl": "sdxl"}


def make_lora(path: Path, config: str, seed: int) -> Path:
    from tests.support.loras import our_lora

    return our_lora(path, config=config, arch=FAMILY[config], seed=seed)


class Serve:
    def __init__(self, model: str):
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "trainer", "serve", "--model", model], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def first_image(self, request: dict) -> float:
        """Seconds from sending `request` to its first image event."""
        start = time.perf_counter()
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            event = json.loads(line)
            if event["type"] == "error":
                raise RuntimeError(event["message"])
            if event["type"] == "image" and event.get("job") == request["id"]:
                return time.perf_counter() - start
        raise RuntimeError("serve ended early")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def serve_figures(model: str, config: str, steps: int, work: Path, repeat: int = 3) -> dict:
    """Cold start once; then each kind of switch `repeat` times, keeping the fastest (the machine's other
    load only ever adds time)."""
    loras = [make_lora(work / f"lora{i}.safetensors", config, i) for i in range(repeat + 1)]
    counter = iter(range(10_000))

    def request(loras_: list[Path], weight: float = 0.8) -> dict:
        job = f"job{next(counter)}"
        return {"cmd": "generate", "id": job, "prompt": "a lighthouse", "seed": 1, "steps": steps,
                "out": str(work / "out"), "name": job, "loras": [{"path": str(p), "weight": weight} for p in loras_]}

    engine = Serve(model)
    first_request = engine.first_image(request(loras[:1]))
    figures = {"cold_start_s": time.perf_counter() - engine.started, "first_request_s": first_request}
    figures["no_lora_s"] = min(engine.first_image(request([])) for _ in range(repeat))
    figures["switch_new_lora_s"] = min(engine.first_image(request([p])) for p in loras[1:])
    figures["switch_cached_lora_s"] = min(engine.first_image(request([p])) for p in loras[:repeat])
    figures["strength_change_s"] = min(engine.first_image(request(loras[:1], w)) for w in (0.3, 0.5, 0.7))
    engine.close()
    return figures


def merge_figures(arch: str, work: Path) -> dict:
    from bench.realsize import build_checkpoint

    start = time.perf_counter()
    base = build_checkpoint(arch, work / f"random-{arch}.safetensors")
    built = time.perf_counter() - start
    lora = make_lora(work / f"lora-{arch}.safetensors", arch, 3)
    out = work / f"merged-{arch}.safetensors"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "trainer", "merge", str(base), f"{lora}:0.8", "--out", str(out),
                           "--overwrite", "--json"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2   # KiB on Linux
    return {"merge_arch": arch, "base_gb": base.stat().st_size / 1e9, "build_s": built, "merge_s": seconds,
            "merge_peak_rss_gb": peak_gb, "merged": json.loads(proc.stdout)["summary"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo:sd15")
    p.add_argument("--config", default="tiny-sd15", help="architecture of --model for the random LoRAs")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--merge", choices=["sd15", "sdxl"], help="also bake a LoRA into a real-size checkpoint")
    p.add_argument("--work", type=Path, help="folder for the real-size files (default: a temp folder)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        # merge first: its peak RSS is read from the children's maximum, which serve must not raise
        figures = merge_figures(args.merge, work) if args.merge else {}
        figures.update(serve_figures(args.model, args.config, args.steps, work))
    for key, value in figures.items():
        print(f"  {key:24} {value:.2f}" if isinstance(value, float) else f"  {key:24} {value}")
    print(json.dumps({"bench": "generate", "model": args.model, "steps": args.steps, **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
