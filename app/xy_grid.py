"""An X/Y grid as one PNG: the cells' images side by side, the axis values written along the top and left
edges (as A1111's X/Y plot does), so the grid can be shared or compared later on its own."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter

from trainer.shared.fsutil import atomic_write

TOP, LEFT, PAD = 40, 180, 4


def compose_grid(cells: dict[tuple[int, int], str], rows: list[str], columns: list[str], out: Path) -> Path:
    images = {key: QImage(path) for key, path in cells.items()}
    width = max((im.width() for im in images.values()), default=64)
    height = max((im.height() for im in images.values()), default=64)
    canvas = QImage(LEFT + len(columns) * (width + PAD), TOP + len(rows) * (height + PAD),
                    QImage.Format.Format_RGB32)
    canvas.fill(QColor("white"))
    painter = QPainter(canvas)
    painter.setFont(QFont("Sans", 11))
    painter.setPen(QColor("black"))
    flags = Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap
    for c, label in enumerate(columns):
        painter.drawText(QRect(LEFT + c * (width + PAD), 0, width, TOP), flags, label)
    for r, label in enumerate(rows):
        painter.drawText(QRect(0, TOP + r * (height + PAD), LEFT - PAD, height), flags, label)
    for (r, c), image in images.items():
        painter.drawImage(LEFT + c * (width + PAD), TOP + r * (height + PAD), image)
    painter.end()
    out = Path(out)

    def write(tmp: Path) -> None:
        if not canvas.save(str(tmp), "PNG"):
            raise OSError(f"could not write {out}")

    atomic_write(out, write)  # readers never see half a grid
    return out


def parse_strengths(text: str) -> list[float]:
    """'0, 0.5, 1' -> [0.0, 0.5, 1.0]; a bad entry raises ValueError naming it."""
    values = []
    for part in text.replace(";", ",").split(","):
        if part.strip():
            try:
                values.append(float(part))
            except ValueError:
                raise ValueError(f"'{part.strip()}' is not a strength; write numbers like 0, 0.5, 1") from None
    if not values:
        raise ValueError("give at least one strength, e.g. 0, 0.5, 1")
    return values


def plan_cells(mode: str, strengths: list[float], loras: list[dict], prompts: list[str], prompt: str):
    """Rows, columns and [(row, col, prompt, loras)] of an X/Y grid; X is always the strength.

    mode "checkpoints": one row per LoRA file, applied alone at each strength (pick the best epoch).
    mode "prompts": one row per prompt, all the LoRAs together at each strength."""
    columns = [f"strength {s:g}" for s in strengths]
    cells = []
    if mode == "checkpoints":
        if not loras:
            raise ValueError("add the checkpoints to compare to the LoRA list first")
        rows = [Path(d["path"]).stem for d in loras]
        for r, lora in enumerate(loras):
            for c, s in enumerate(strengths):
                cells.append((r, c, prompt, [dict(lora, weight=s, te_weight=None)]))
        return rows, columns, cells
    prompts = [p.strip() for p in prompts if p.strip()]
    if not prompts:
        raise ValueError("write the prompts to compare, one per line")
    for r, text in enumerate(prompts):
        for c, s in enumerate(strengths):
            cells.append((r, c, text, [dict(d, weight=s, te_weight=None) for d in loras]))
    return prompts, columns, cells
