"""Dataset figures: import throughput and `dataset check` time for generated 1024-px images, and the
speed-up the latent cache gives the second epoch on an SD1.5-shaped model (real SD VAE config, random
weights) at 256 px.

    .venv/bin/python bench/dataset_import.py [--count 500]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.data.health import check_dataset  # noqa: E402
from trainer.data.importer import import_sources  # noqa: E402


def generate(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    for i in range(count):
        array = np.roll(base, i * 7, axis=1) // (1 + i % 3)
        im = Image.fromarray(array)
        if i % 2:
            im.save(folder / f"photo_{i:04d}.jpg", quality=90)
        else:
            im.save(folder / f"drawing_{i:04d}.png", compress_level=1)
        if i % 3 == 0:
            (folder / f"{'photo' if i % 2 else 'drawing'}_{i:04d}.txt").write_text("zkx, a test image")


def import_figures(root: Path, count: int) -> dict:
    src = root / "src"
    generate(src, count)
    start = time.perf_counter()
    report = import_sources([src], root / "dataset")
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    check_dataset(root / "dataset", "sdxl", batch_size=4)
    check_seconds = time.perf_counter() - start
    return {"images": count, "imported": report.count("imported"), "import_s": seconds,
            "import_images_per_s": count / seconds, "check_s": check_seconds}


def cache_figures(steps: int = 6) -> dict:
    """Seconds per image for the VAE (what an uncached epoch adds) vs a training step on a cached batch."""
    from diffusers import AutoencoderKL

    from trainer.models.assets import CONFIGS

    torch.set_num_threads(1)
    vae = AutoencoderKL.from_config(json.loads((CONFIGS / "sd15" / "vae" / "config.json").read_text()))
    pixels = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        vae.encode(pixels)
        start = time.perf_counter()
        for _ in range(3):
            vae.encode(pixels)
    encode_per_image = (time.perf_counter() - start) / 6
    step = _step_seconds(steps)
    batch = 2
    return {"vae_encode_s_per_image": encode_per_image, "cached_step_s": step,
            "second_epoch_speedup": (step + batch * encode_per_image) / step}


def _step_seconds(steps: int) -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from step_overhead import Interleaved, low_quartile, reduced_sd15_folder

    from tests.support.engine import RecordingSink, make_dataset, tiny_config
    from trainer.run import loop
    from trainer.run.control import Control

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = tiny_config(make_dataset(root / "d", count=4, size=256),
                          model__path=str(reduced_sd15_folder(root)), dataset__resolution=256,
                          schedule__batch_size=2, schedule__max_steps=steps)
        (root / "run").mkdir()
        timer, original = Interleaved(lambda: (0.0, 0.0)), loop._micro_step  # times whole steps, no bare one
        loop._micro_step = timer.wrap(original)
        try:
            loop.train(cfg, root / "run", RecordingSink(), Control())
        finally:
            loop._micro_step = original
        return low_quartile(timer.trainer_times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = import_figures(Path(tmp), args.count)
    figures.update(cache_figures())
    if args.json:
        print(json.dumps({"bench": "dataset_import", "figures": figures}))
    print(f"{'figure':32} {'value':>10}")
    for key, value in figures.items():
        print(f"{key:32} {value:>10.3f}" if isinstance(value, float) else f"{key:32} {value:>10}")


if __name__ == "__main__":
    main()
