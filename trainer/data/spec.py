"""What a dataset folder holds: its subsets (folder, repeats, regularisation) and their images.

Three ways to describe it, tried in order: a `dataset.toml` listing `[[subset]]` tables; kohya-style
`N_name` subfolders (N = repeats; a name containing "reg" marks regularisation images); or just the
folder itself, images in it and in any plain subfolders. None of this is required: a folder of images is a
dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.data.captions import caption_path, read_caption

# the layout rules (subsets, which files are images) are shared with the GUI; re-exported for engine imports
from trainer.shared.dataset_layout import KOHYA_FOLDER, Subset, read_dataset, subset_images  # noqa: F401
from trainer.shared.images import IMAGE_SUFFIXES, image_size  # noqa: F401


@dataclass
class ImageRecord:
    path: Path
    subset: Subset
    caption: str
    width: int
    height: int
    caption_problem: str = ""


def list_images(subsets: list[Subset]) -> list[ImageRecord]:
    return [_record(path, subset) for path, subset in subset_images(subsets)]


def _record(path: Path, subset: Subset) -> ImageRecord:
    caption = read_caption(caption_path(path, subset.caption_extension))
    w, h = image_size(path)
    return ImageRecord(path, subset, caption.text, w, h, caption.problem)


def dataset_images(folder: Path, only: list[Path] | None = None) -> list[Path]:
    """The dataset's images, or those of them named in ONLY (`dataset caption --only`)."""
    images = [r.path for r in list_images(read_dataset(folder))]
    if only:
        wanted = {p.resolve() for p in only}
        images = [p for p in images if p.resolve() in wanted]
    return images
