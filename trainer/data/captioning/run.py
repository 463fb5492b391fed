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
from trainer.data.captioning.finish import Finish
from trainer.data.captioning.image import open_upright
from trainer.data.captions import caption_path, join_tags, read_caption, split_tags
from trainer.shared.fsutil import atomic_write_text

MODES = ("fill", "append", "overwrite")
STATE_FILE = Path(".lora-studio") / "captioned.json"
# What one image may throw without costing the others their captions: an unreadable or truncated file,
# a model that chokes on one input, a GPU out of memory on one large image. Anything else is a bug.
PER_IMAGE_ERRORS = (OSError, ValueError, RuntimeError, Image.DecompressionBombError)


@dataclass
class CaptionResult:
    path: Path
    caption: str = ""          # the new caption (written, preview), or the one left in place (skipped)
    status: str = "written"    # written | skipped | preview (nothing written)
    reason: str = ""           # why it was skipped; for a caption written, a note (e.g. past CLIP's budget)
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
                 should_stop: Callable[[], bool] = lambda: False, finish: Finish | None = None,
                 tagger: Captioner | None = None, preview: bool = False) -> Iterator[CaptionResult]:
    """Caption `images` (`captioner.batch_size` to a model call), yielding each result as it is written;
    stops between batches when `should_stop()` turns true (every caption already written stays, complete).

    `finish`: post-processing (default: strip boilerplate openings, warn past CLIP's budget). `tagger`: its
    tags go before the model's sentence ("tags, sentence", for SDXL). `preview`: caption every image
    whatever the mode and write nothing (status "preview").
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    job = Job(captioner, mode, trigger, force, finish or Finish(), tagger, preview, WrittenCaptions(folder))
    size = max(1, captioner.batch_size)
    for start in range(0, len(images), size):
        if should_stop():
            return
        chunk = [Path(image) for image in images[start:start + size]]
        yield from job.caption_chunk([(image, state_key(folder, image)) for image in chunk])


@dataclass
class Job:
    captioner: Captioner
    mode: str
    trigger: str
    force: bool
    finish: Finish
    tagger: Captioner | None
    preview: bool
    state: WrittenCaptions

    def caption_chunk(self, chunk: list[tuple[Path, str]]) -> list[CaptionResult]:
        """Skip what must be left alone, caption the rest in one model call, then write each."""
        results: dict[Path, CaptionResult] = {}
        todo: dict[Path, tuple[str, str, object]] = {}   # image -> (key, current caption, opened image)
        for image, key in chunk:
            current = read_caption(caption_path(image))
            if current.problem and not self.preview:  # e.g. not UTF-8: reported, never rewritten
                results[image] = CaptionResult(image, "", "skipped", f"{current.path.name}: {current.problem}",
                                               failed=True)
                continue
            reason = "" if self.preview else skip_reason(self.mode, current.text, self.state.hashes.get(key),
                                                         self.force)
            if reason:
                results[image] = CaptionResult(image, current.text, "skipped", reason)
                continue
            try:
                todo[image] = (key, current.text, open_upright(image))
            except PER_IMAGE_ERRORS as exc:
                results[image] = _failed(image, current.text, exc)
        for (image, (key, current, _opened)), new in zip(todo.items(), self._model_captions(todo)):
            results[image] = _failed(image, current, new) if isinstance(new, Exception) else \
                self._write(image, key, current, new)
        return [results[image] for image, _key in chunk]

    def _model_captions(self, todo: dict) -> list:
        """One caption (or the exception it raised) per image; a batch that fails goes again one by one,
        so one bad image costs only its own caption."""
        opened = [item[2] for item in todo.values()]
        if not opened:
            return []
        try:
            return [self._with_tags(image, text) for image, text in zip(opened, self.captioner.caption_batch(opened))]
        except PER_IMAGE_ERRORS as exc:
            if len(opened) == 1:
                return [exc]
        out = []
        for image in opened:
            try:
                out.append(self._with_tags(image, self.captioner.caption(image)))
            except PER_IMAGE_ERRORS as exc:
                out.append(exc)
        return out

    def _with_tags(self, image, text: str) -> str:
        text = self.finish.model_text(text)
        if self.tagger is None or not text.strip():
            return text
        return join_tags(split_tags(self.tagger.caption(image)) + [text])

    def _write(self, image: Path, key: str, current: str, new: str) -> CaptionResult:
        if not split_tags(new):  # an empty file would look captioned to the user and to fill mode: write none
            return CaptionResult(image, current, "skipped", "the model gave no caption (no tag scored above "
                                 "the thresholds?)")
        text, note = self.finish.fit(combine("overwrite" if self.preview else self.mode, current, new,
                                             self.trigger))
        if self.preview:
            return CaptionResult(image, text, "preview", note)
        atomic_write_text(caption_path(image), text + "\n")
        self.state.remember(key, text)
        return CaptionResult(image, text, reason=note)


def _failed(image: Path, current: str, exc: Exception) -> CaptionResult:
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return CaptionResult(image, current, "skipped", f"cannot caption it: {detail}", failed=True)
