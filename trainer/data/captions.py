"""Caption sidecars: read them tolerantly, edit them across a dataset, never mangle them.

A caption is comma-separated tags (`zkx, 1girl, red hair`) or free text (kept as one "tag" when it has no
commas). UTF-8 with or without a BOM and CRLF line ends are read; a file in another encoding is reported
and left untouched. Writes are atomic UTF-8.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# the reading and splitting rules are shared with the GUI (torch-free); re-exported for the engine's imports
from trainer.shared.captions import CaptionText, caption_path, join_tags, read_caption, split_tags  # noqa: F401
from trainer.shared.fsutil import atomic_write_text


@dataclass
class EditReport:
    changed: list[str]
    skipped: list[str]   # "file: reason"


def edit_captions(images: list[Path], edit: Callable[[list[str]], list[str]]) -> EditReport:
    """Apply `edit` to the tag list of every image's caption; write only those that change."""
    report = EditReport([], [])
    for image in images:
        caption = read_caption(caption_path(image))
        if caption.problem:
            report.skipped.append(f"{caption.path}: {caption.problem}")
            continue
        new = join_tags(edit(split_tags(caption.text)))
        if new != caption.text:
            atomic_write_text(caption.path, new + "\n")
            report.changed.append(str(caption.path))
    return report


def set_trigger(tags: list[str], trigger: str) -> list[str]:
    return [trigger] + [t for t in tags if t.lower() != trigger.lower()]


def add_tag(tags: list[str], tag: str, at_start: bool = False) -> list[str]:
    if any(t.lower() == tag.lower() for t in tags):
        return tags
    return [tag] + tags if at_start else tags + [tag]


def remove_tag(tags: list[str], tag: str) -> list[str]:
    return [t for t in tags if t.lower() != tag.lower()]


def replace_tag(tags: list[str], old: str, new: str) -> list[str]:
    out: list[str] = []
    for t in tags:
        value = new if t.lower() == old.lower() else t
        if value and value.lower() not in (o.lower() for o in out):
            out.append(value)
    return out


def find_replace(text: str, find: str, replace: str, regex: bool = False) -> str:
    return re.sub(find, replace, text) if regex else text.replace(find, replace)


def find_replace_captions(images: list[Path], find: str, replace: str, regex: bool = False) -> EditReport:
    return edit_captions(images, lambda tags: split_tags(find_replace(join_tags(tags), find, replace, regex)))


def tag_frequency(images: list[Path]) -> dict[str, int]:
    counts = Counter(t for image in images for t in split_tags(read_caption(caption_path(image)).text))
    return dict(counts.most_common())


def process_caption(caption: str, keep_tokens: int, shuffle: bool, tag_dropout: float, caption_dropout: float,
                    rng: random.Random) -> str:
    """Training-time caption variation: keep the first N tags in place, shuffle and drop the rest."""
    if caption_dropout and rng.random() < caption_dropout:
        return ""
    tags = split_tags(caption)
    if len(tags) <= 1 and not shuffle:
        return caption
    fixed, rest = tags[:keep_tokens], tags[keep_tokens:]
    if tag_dropout:
        rest = [t for t in rest if rng.random() >= tag_dropout]
    if shuffle:
        rng.shuffle(rest)
    return join_tags(fixed + rest)
