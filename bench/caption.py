"""Auto-captioning throughput on this machine's CPU with the tiny test models (built here, random weights):
end-to-end images/s (decode, caption, post-processing, atomic write, state file) for the WD14-style ONNX
tagger at the real 448-px input size, a tiny BLIP image-to-text model, and one tiny model per
vision-language back end (Florence-2, Qwen2-VL, Qwen2.5-VL, LLaVA; Qwen2.5-VL also 4 images a call).
Tiny models measure our pipeline's overhead, not a real model's speed: a real WD14 ViT tagger is ~90 M
parameters, BLIP-base ~250 M, Florence-2-large 0.77 B, Qwen2.5-VL-7B and JoyCaption (LLaVA) ~8 B.

    .venv/bin/python bench/caption.py [--count 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.caption_models import (  # noqa: E402
    build_blip,
    build_florence2,
    build_llava,
    build_qwen_vl,
    build_tagger,
)
from trainer.data.captioning import load_captioner  # noqa: E402
from trainer.data.captioning.run import auto_caption  # noqa: E402

BLIP_TOKENS = 40  # a full-length BLIP caption (the test folder's own setting is 5, for speed)
VLM_TOKENS = 80   # about a paragraph; the tiny VLMs never stop early, so every caption is this long
TAGS = [(f"tag_{i}", 0, 0.2 + 0.6 * (i % 2)) for i in range(64)] + [("someone", 4, 0.9)]


def images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def measure(model: Path, count: int, root: Path, name: str, **options) -> dict:
    dataset = root / f"ds-{name}"
    paths = images(dataset, count)
    start = time.perf_counter()
    captioner = load_captioner(model, "cpu", **(options or {"max_new_tokens": BLIP_TOKENS}))  # tagger: ignored
    loaded = time.perf_counter()
    written = sum(r.status == "written" for r in auto_caption(dataset, paths, captioner, "overwrite", "zkx"))
    elapsed = time.perf_counter() - loaded
    assert written == count, f"{name}: only {written} of {count} captioned"
    return {"backend": name, "images": count, "load_s": round(loaded - start, 2),
            "images_per_s": round(count / elapsed, 1), "ms_per_image": round(1000 * elapsed / count, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="also print one JSON line of the figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        qwen25 = build_qwen_vl(root / "qwen2.5-vl")
        vlm = {"max_new_tokens": VLM_TOKENS}
        rows = [measure(build_tagger(root / "tagger", TAGS, side=448), args.count, root, "wd14-onnx"),
                measure(build_blip(root / "blip"), args.count, root, "blip"),
                measure(build_florence2(root / "florence-2"), args.count, root, "florence-2", **vlm),
                measure(build_qwen_vl(root / "qwen2-vl", "2"), args.count, root, "qwen2-vl", **vlm),
                measure(qwen25, args.count, root, "qwen2.5-vl", **vlm),
                measure(qwen25, args.count, root, "qwen2.5-vl-x4", **vlm, batch_size=4),
                measure(build_llava(root / "llava"), args.count, root, "llava", **vlm)]
    print(f"{'back end':14} {'images':>7} {'load s':>8} {'images/s':>9} {'ms/image':>9}")
    for r in rows:
        print(f"{r['backend']:14} {r['images']:>7} {r['load_s']:>8} {r['images_per_s']:>9} {r['ms_per_image']:>9}")
    if args.json:
        print(json.dumps({"bench": "caption", "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
