"""What a dataset folder holds: its subsets (folder, repeats, regularisation) and their images.

Three ways to describe it, tried in order: a `dataset.toml` listing `[[subset]]` tables; kohya-style
`N_name` subfolders (N = repeats; a name containing "reg" marks regularisation images); or just the
folder itself, images in it and in any plain subfolders. None of this is required: a folder of images is a
dataset.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from PIL import Image

from trainer.data.captions import caption_path, read_caption
from trainer.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")


@dataclass
class Subset:
    folder: Path
    name: str
    repeats: int = 1
    is_reg: bool = False
    caption_extension: str = ".txt"
    keep_tokens: int = 0
    shuffle_tags: bool = False
    caption_dropout: float = 0.0
    tag_dropout: float = 0.0
    resolution: int | None = None   # this subset's bucket base, e.g. close-ups at 768 in a 512 dataset
    validation: bool = False        # held out of training, for the validation loss only


@dataclass
class ImageRecord:
    path: Path
    subset: Subset
    caption: str
    width: int
    height: int
    caption_problem: str = ""


def read_dataset(root: Path) -> list[Subset]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}", "choose the folder that holds your images")
    if (root / "dataset.toml").exists():
        return _from_toml(root)
    kohya = [p for p in sorted(root.iterdir()) if p.is_dir() and KOHYA_FOLDER.match(p.name)]
    if kohya:
        return [Subset(p, KOHYA_FOLDER.match(p.name)[2], int(KOHYA_FOLDER.match(p.name)[1]),
                       is_reg="reg" in KOHYA_FOLDER.match(p.name)[2].lower()) for p in kohya]
    return [Subset(root, root.name)]


def _from_toml(root: Path) -> list[Subset]:
    path = root / "dataset.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid TOML: {exc}", "fix the line it names") from None
    allowed = {f.name for f in fields(Subset)}
    subsets = []
    for i, table in enumerate(data.get("subset", [])):
        unknown = set(table) - allowed
        if unknown:
            raise DatasetError(f"{path}: unknown key '{sorted(unknown)[0]}' in subset {i + 1}",
                               f"known keys: {', '.join(sorted(allowed))}")
        folder = (root / table.get("folder", ".")).resolve()
        values = {k: v for k, v in table.items() if k not in ("folder", "name")}
        subsets.append(Subset(folder, table.get("name", folder.name), **values))
    if not subsets:
        raise DatasetError(f"{path} lists no [[subset]]", "add a [[subset]] table with folder = \"...\"")
    return subsets


def list_images(subsets: list[Subset]) -> list[ImageRecord]:
    records = []
    for subset in subsets:
        nested = len(subsets) == 1
        for path in _images_in(subset.folder, recursive=nested):
            records.append(_record(path, subset))
    return records


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    # masks/ holds loss masks (trainer.data.masks), not training images
    return sorted(p for p in pattern if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                  and "masks" not in p.relative_to(folder).parts[:-1])


def _record(path: Path, subset: Subset) -> ImageRecord:
    caption = read_caption(caption_path(path, subset.caption_extension))
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w  # rotated by EXIF: the model sees it upright
    except OSError:
        w = h = 0
    return ImageRecord(path, subset, caption.text, w, h, caption.problem)
