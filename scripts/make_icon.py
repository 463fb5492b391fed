"""Draw the app icon (assets/icon.png, 256 px): a rounded tile with a gradient, a low-rank "L" and a spark.

Drawn in code so the icon has a known origin (no third-party artwork) and can be regenerated:
    .venv/bin/python scripts/make_icon.py
"""

from pathlib import Path

from PIL import Image, ImageDraw

SIZE, SCALE = 256, 4  # draw at 4x and downsample for smooth edges
OUT = Path(__file__).resolve().parent.parent / "assets" / "icon.png"


def main() -> None:
    s = SIZE * SCALE
    gradient = Image.new("RGB", (s, s))
    top, bottom = (108, 76, 230), (32, 150, 214)
    for y in range(s):
        t = y / (s - 1)
        ImageDraw.Draw(gradient).line([(0, y), (s, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))
    mask = Image.new("L", (s, s), 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, s - 1, s - 1], radius=s // 5, fill=255)
    icon = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    icon.paste(gradient, (0, 0), mask)
    draw = ImageDraw.Draw(icon)
    u = s // 16
    draw.rounded_rectangle([4 * u, 3 * u, 6.5 * u, 13 * u], radius=u, fill="white")        # the L's stem
    draw.rounded_rectangle([4 * u, 10.5 * u, 12 * u, 13 * u], radius=u, fill="white")      # the L's foot
    cx, cy, r = 11 * u, 5.5 * u, 2.6 * u                                                  # a four-point spark
    draw.polygon([(cx, cy - r), (cx + r / 4, cy - r / 4), (cx + r, cy), (cx + r / 4, cy + r / 4),
                  (cx, cy + r), (cx - r / 4, cy + r / 4), (cx - r, cy), (cx - r / 4, cy - r / 4)],
                 fill=(255, 236, 140))
    icon.resize((SIZE, SIZE), Image.Resampling.LANCZOS).save(OUT, optimize=True)
    print("saved", OUT)


if __name__ == "__main__":
    main()
