"""What a dataset folder holds: its subsets (folder, repeats, regularisation).

Three ways to describe it, tried in order: a `dataset.toml` listing `[[subset]]` tables; kohya-style
`N_name` subfolders (N = repeats; a name containing "reg" marks regularisation images); or just the
folder itself, images in it and in any plain subfolders. None of this is required: a folder of images is a
dataset. Torch-free: the GUI's step estimate reads datasets by these same rules.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from trainer.shared.captions import caption_extension_problem
from trainer.shared.errors import DatasetError
from trainer.shared.images import images_in

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
        if problem := caption_extension_problem(values.get("caption_extension", ".txt")):
            raise DatasetError(f"{path}: caption_extension {values['caption_extension']!r} in subset {i + 1}: "
                               f"{problem}", "fix that line, or leave it out for .txt")
        subsets.append(Subset(folder, table.get("name", folder.name), **values))
    if not subsets:
        raise DatasetError(f"{path} lists no [[subset]]", "add a [[subset]] table with folder = \"...\"")
    return subsets


def subset_images(subsets: list[Subset]) -> list[tuple[Path, Subset]]:
    """Every image with its subset; a lone subset (the folder itself) includes plain subfolders."""
    nested = len(subsets) == 1
    return [(path, subset) for subset in subsets for path in images_in(subset.folder, recursive=nested)]


def dataset_images(root: Path) -> list[Path]:
    """The images training would use, for a browser of the dataset: a broken dataset.toml shows the
    folder's own images instead (the health check names the problem)."""
    try:
        return [path for path, _subset in subset_images(read_dataset(root))]
    except DatasetError:
        return images_in(root, recursive=False)
