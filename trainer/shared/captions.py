"""Caption sidecars as the engine reads them: UTF-8 with or without a BOM, line breaks joined with spaces,
comma-separated tags (free text without commas is one "tag")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class CaptionText:
    path: Path
    text: str
    problem: str = ""   # e.g. "not UTF-8": such a file is never rewritten


def read_caption(path: Path) -> CaptionText:
    path = Path(path)
    if not path.exists():
        return CaptionText(path, "")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return CaptionText(path, "", "not UTF-8 text: re-save it as UTF-8 (most editors offer this)")
    return CaptionText(path, " ".join(text.replace("\r\n", "\n").split("\n")).strip())


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def join_tags(tags: list[str]) -> str:
    return ", ".join(tags)


def caption_path(image: Path, extension: str = ".txt") -> Path:
    return Path(image).with_suffix(extension)
