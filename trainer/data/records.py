"""The images a run trains on, read before anything heavy is imported, so that a missing or empty dataset
is reported at once. Torch-free."""

from __future__ import annotations

from pathlib import Path

from trainer.config import TrainConfig
from trainer.data.spec import list_images, read_dataset
from trainer.errors import DatasetError


def load_records(cfg: TrainConfig) -> list:
    """The dataset's images; plain and kohya folders take their caption options from the config."""
    root = Path(cfg.dataset.path)
    subsets = read_dataset(root)
    if not (root / "dataset.toml").exists():
        d = cfg.dataset
        for s in subsets:
            s.caption_extension, s.keep_tokens, s.shuffle_tags = d.caption_extension, d.keep_tokens, d.shuffle_tags
            s.caption_dropout, s.tag_dropout = d.caption_dropout, d.tag_dropout
    records = [r for r in list_images(subsets) if r.width]
    if not records:
        raise DatasetError(f"dataset folder {root} holds no readable images",
                           "add .jpg/.png/.webp images (with optional same-named .txt captions)")
    return records
