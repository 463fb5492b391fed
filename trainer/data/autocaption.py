"""Auto-captioning a dataset with a local model: which images to caption, how to combine with what is
there, and never overwriting a caption the user edited since the last run without being told to.

Modes: `fill` captions only images without a caption; `append` adds the model's tags to the existing
caption (without repeating tags); `overwrite` replaces it. We remember a hash of every caption we wrote in
`.lora-studio/captioned.json` inside the dataset; a caption that no longer matches its hash was edited by
the user and is skipped (append, overwrite) unless `force`. A caption the user wrote before any
auto-captioning is likewise never overwritten without `force` (append only adds to it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from trainer.data.captioners import Captioner
from trainer.data.captions import caption_path, join_tags, read_caption, split_tags
from trainer.fsutil import atomic_write_text

MODES = ("fill", "append", "overwrite")
STATE_FILE = Path(".lora-studio") / "captioned.json"


@dataclass
class CaptionResult:
    path: Path
    caption: str = ""
    status: str = "written"   # written | skipped
    reason: str = ""


def _hash(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


class WrittenCaptions:
    """The hashes of the captions we wrote, keyed by image path relative to the dataset."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / STATE_FILE
        try:
            self.hashes: dict[str, str] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            self.hashes = {}

    def remember(self, key: str, text: str) -> None:
        self.hashes[key] = _hash(text)
        self.path.parent.mkdir(exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.hashes, indent=1, ensure_ascii=False))


def skip_reason(mode: str, current: str, problem: str, written_hash: str | None, force: bool) -> str:
    if problem:
        return problem
    if not current:
        return ""
    if mode == "fill":
        return "already has a caption (mode fill only captions images without one)"
    if force:
        return ""
    if written_hash is not None and written_hash != _hash(current):
        return "edited by you since the last auto-caption; use --force to replace it"
    if written_hash is None and mode == "overwrite":
        return "written by you, not by auto-caption; use --force to replace it"
    return ""


def combine(mode: str, current: str, new: str, trigger: str) -> str:
    tags = split_tags(new)
    if mode == "append" and current:
        existing = split_tags(current)
        seen = {t.lower() for t in existing}
        tags = existing + [t for t in tags if t.lower() not in seen]
    if trigger:
        tags = [trigger] + [t for t in tags if t.lower() != trigger.lower()]
    return join_tags(tags)


def auto_caption(folder: Path, images: list[Path], captioner: Captioner, mode: str = "fill",
                 trigger: str = "", force: bool = False,
                 should_stop: Callable[[], bool] = lambda: False) -> Iterator[CaptionResult]:
    """Caption `images` one by one, yielding each result; stops between images when asked."""
    state = WrittenCaptions(folder)
    for image in images:
        if should_stop():
            return
        key = str(Path(image).relative_to(folder)) if Path(image).is_relative_to(folder) else str(image)
        current = read_caption(caption_path(image))
        reason = skip_reason(mode, current.text, current.problem, state.hashes.get(key), force)
        if reason:
            yield CaptionResult(image, current.text, "skipped", reason)
            continue
        try:
            with Image.open(image) as opened:
                new = captioner.caption(ImageOps.exif_transpose(opened).convert("RGB"))
        except (OSError, Image.DecompressionBombError) as exc:
            yield CaptionResult(image, current.text, "skipped", f"cannot read the image: {exc}")
            continue
        text = combine(mode, current.text, new, trigger)
        atomic_write_text(caption_path(image), text + "\n")
        state.remember(key, text)
        yield CaptionResult(image, text)
