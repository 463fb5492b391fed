"""Regenerate assets/sample_dataset: simple drawn shapes with captions, for the demo (deterministic)."""

import random
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "assets" / "sample_dataset"
COLORS = {"red": (220, 40, 40), "green": (40, 180, 70), "blue": (40, 80, 220), "yellow": (240, 210, 40),
          "white": (245, 245, 245), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle")


def draw(shape: str, fg: str, bg: str, rng: random.Random, size: int = 256) -> Image.Image:
    im = Image.new("RGB", (size, size), COLORS[bg])
    d = ImageDraw.Draw(im)
    s = rng.randint(size // 3, size // 2)
    x, y = rng.randint(4, size - s - 4), rng.randint(4, size - s - 4)
    if shape == "circle":
        d.ellipse((x, y, x + s, y + s), fill=COLORS[fg])
    elif shape == "square":
        d.rectangle((x, y, x + s, y + s), fill=COLORS[fg])
    else:
        d.polygon([(x + s // 2, y), (x, y + s), (x + s, y + s)], fill=COLORS[fg])
    return im


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    for i in range(8):
        shape = SHAPES[i % 3]
        fg, bg = rng.sample(sorted(COLORS), 2)
        draw(shape, fg, bg, rng).save(OUT / f"shape_{i:02d}.png")
        (OUT / f"shape_{i:02d}.txt").write_text(f"shapes, a {fg} {shape}, {bg} background\n", encoding="utf-8")


if __name__ == "__main__":
    main()
