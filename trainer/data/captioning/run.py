"""Captioning a dataset with a loaded model: which images to caption, how to combine with what is there,
and never overwriting a caption the user edited since the last run without being told to.

Modes: `fill` captions only images without a caption (or with an empty one); `append` adds the model's
tags to the existing caption, without repeating tags; `overwrite` replaces it. We remember a hash of every
caption we wrote in `.lora-studio/captioned.json` inside the dataset; a caption that no longer matches its
hash was edited by the user and is skipped (append, overwrite) unless `force`. A caption the user wrote
before any auto-captioning is likewise never overwritten without `force` (append only adds to it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from trainer.data.captioning.base import Captioner
from trainer.data.captioning.image import open_upright
from trainer.data.captions import caption_path, join_tags, read_caption, split_tags
from trainer.fsutil import atomic_write_text

MODES = ("fill", "append", "overwrite")
STATE_FILE = Path(".lora-studio") / "captioned.json"
# What one image may throw without costing the others their captions: an unreadable or truncated file,
# a model that chokes on one input, a GPU out of memory on one large image. Anything else is a bug.
PER_IMAGE_ERRORS = (OSError, ValueError, RuntimeError, Image.DecompressionBombError)


@dataclass
class CaptionResult:
    path: Path
    caption: str = ""          # the new caption (written), or the one left in place (skipped)
    status: str = "written"    # written | skipped
    reason: str = ""           # why it was skipped
    failed: bool = False       # skipped because of an error, not by choice (the exit code counts these)


def caption_hash(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


class WrittenCaptions:
    """The hashes of the captions we wrote, keyed by the image's path relative to the dataset."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / STATE_FILE
        try:
            hashes = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            hashes = {}  # none yet, or unreadable: then every existing caption counts as the user's
        self.hashes: dict[str, str] = hashes if isinstance(hashes, dict) else {}

    def remember(self, key: str, text: str) -> None:
        # Written after every caption (atomically), so a stop or a crash never loses track of one.
        self.hashes[key] = caption_hash(text)
        atomic_write_text(self.path, json.dumps(self.hashes, indent=1, ensure_ascii=False, sort_keys=True))


def skip_reason(mode: str, current: str, written_hash: str | None, force: bool) -> str:
    """Why the caption `current` must be left alone in `mode`; empty when it may be (re)written."""
    if not current:
        return ""
    if mode == "fill":
        return "already has a caption (mode fill only captions images without one)"
    if force:
        return ""
    if written_hash is not None and written_hash != caption_hash(current):
        return "edited by you since the last auto-caption; use --force to replace it"
    if written_hash is None and mode == "overwrite":
        return "written by you, not by auto-caption; use --force to replace it"
    return ""


def combine(mode: str, current: str, new: str, trigger: str) -> str:
    """The caption to write: the model's (after the existing tags in append), trigger word first, once."""
    tags = split_tags(new)
    if mode == "append" and current:
        existing = split_tags(current)
        seen = {t.lower() for t in existing}
        tags = existing + [t for t in tags if t.lower() not in seen]
    if trigger.strip():
        tags = [trigger.strip()] + [t for t in tags if t.lower() != trigger.strip().lower()]
    return join_tags(tags)


def state_key(folder: Path, image: Path) -> str:
    # Relative and with forward slashes, so the state survives moving the dataset or a Windows/Linux hop.
    image, folder = Path(image).resolve(), Path(folder).resolve()
    return image.relative_to(folder).as_posix() if image.is_relative_to(folder) else image.as_posix()


def auto_caption(folder: Path, images: list[Path], captioner: Captioner, mode: str = "fill",
                 trigger: str = "", force: bool = False,
                 should_stop: Callable[[], bool] = lambda: False) -> Iterator[CaptionResult]:
    """Caption `images` one by one, yielding each result as it is written; stops between images when
    `should_stop()` turns true (every caption already written stays, complete)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    state = WrittenCaptions(folder)
    for image in images:
        if should_stop():
            return
        yield caption_one(Path(image), state_key(folder, image), state, captioner, mode, trigger, force)


def caption_one(image: Path, key: str, state: WrittenCaptions, captioner: Captioner, mode: str,
                trigger: str, force: bool) -> CaptionResult:
    current = read_caption(caption_path(image))
    if current.problem:  # e.g. not UTF-8: reported, never rewritten (we would mangle it)
        return CaptionResult(image, "", "skipped", f"{current.path.name}: {current.problem}", failed=True)
    reason = skip_reason(mode, current.text, state.hashes.get(key), force)
    if reason:
        return CaptionResult(image, current.text, "skipped", reason)
    try:
        new = captioner.caption(open_upright(image))
    except PER_IMAGE_ERRORS as exc:
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return CaptionResult(image, current.text, "skipped", f"cannot caption it: {detail}", failed=True)
    if not split_tags(new):  # an empty file would look captioned to the user and to fill mode: write none
        return CaptionResult(image, current.text, "skipped", "the model gave no caption (no tag scored above "
                             "the thresholds?)")
    text = combine(mode, current.text, new, trigger)
    atomic_write_text(caption_path(image), text + "\n")
    state.remember(key, text)
    return CaptionResult(image, text)
