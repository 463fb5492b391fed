"""Which image is a training image's loss mask (loss.masked). The engine trains with it (trainer.data.masks);
the dataset page shows it over the image. Torch-free.

A mask is a same-named image in a `masks/` folder next to the image, in its subset's folder, or in the
dataset folder above that; else the image's own alpha channel (transparent = ignored). White counts,
black is ignored.
"""

from __future__ import annotations

from pathlib import Path

from trainer.shared.dataset_layout import read_dataset
from trainer.shared.errors import DatasetError
from trainer.shared.images import MASKS_FOLDER

MASK_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
FROM_FOLDER, FROM_ALPHA = "masks folder", "alpha"   # what mask_source answers ("" = no mask)


def mask_file(image: Path, subset_folder: Path) -> Path | None:
    """IMAGE's mask in a masks/ folder (beside it, in SUBSET_FOLDER, or the folder above), if there is one."""
    image, subset_folder = Path(image), Path(subset_folder)
    for folder in dict.fromkeys((image.parent, subset_folder, subset_folder.parent)):
        for suffix in MASK_SUFFIXES:
            candidate = folder / MASKS_FOLDER / f"{image.stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def has_alpha(path: Path) -> bool:
    from PIL import Image  # torch-free, but only mask look-ups need it

    try:
        with Image.open(path) as im:
            return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    except OSError:
        return False


def unreadable(mask: Path) -> str:
    """Why MASK (a masks/ file) cannot be read as an image, or "" when it can."""
    from PIL import Image

    try:
        with Image.open(mask) as im:
            im.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return str(exc) or type(exc).__name__
    return ""


def mask_source(image: Path, subset_folder: Path) -> str:
    """FROM_FOLDER, FROM_ALPHA or "" (no mask: the whole image counts)."""
    if mask_file(image, subset_folder):
        return FROM_FOLDER
    return FROM_ALPHA if has_alpha(image) else ""


def subset_folders(dataset_root: Path) -> list[Path]:
    """The dataset's subset folders, for a browser that knows only the dataset folder; the folder itself when
    dataset.toml is broken (the health check names the problem)."""
    try:
        return [s.folder for s in read_dataset(dataset_root)]
    except DatasetError:
        return [Path(dataset_root)]


def subset_folder_of(image: Path, folders: list[Path]) -> Path:
    """Which of FOLDERS (subset_folders) IMAGE belongs to: the deepest one holding it, else the first."""
    image = Path(image)
    holding = [f for f in folders if f in image.parents]
    return max(holding, key=lambda f: len(f.parts), default=folders[0])
