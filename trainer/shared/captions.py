"""Caption sidecars as the engine reads them: UTF-8 with or without a BOM, line breaks joined with spaces,
comma-separated tags (free text without commas is one "tag").

The one rule for reading a caption: at most MAX_CAPTION_BYTES of it. No text encoder uses more than 512
tokens, and a token is rarely more than a few bytes, so anything past the bound is never trained on; reading
it whole let one 700 MB text file take the whole memory. A longer file is read up to the bound, reported,
and never rewritten (an edit would cut the user's file).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

MAX_CAPTION_BYTES = 32 * 1024
_EXTENSION = re.compile(r"^\.[A-Za-z0-9_-]{1,16}$")


@dataclass
class CaptionText:
    path: Path
    text: str
    problem: str = ""   # e.g. "not UTF-8": such a file is never rewritten


def read_caption(path: Path) -> CaptionText:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CAPTION_BYTES + 1)
    except FileNotFoundError:
        return CaptionText(path, "")
    except OSError as exc:
        return CaptionText(path, "", f"cannot be read ({exc.strerror or exc})")
    cut = len(raw) > MAX_CAPTION_BYTES
    try:  # a cut may end inside a multi-byte character: the incremental decoder leaves that part out
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(raw[:MAX_CAPTION_BYTES], final=not cut)
    except UnicodeDecodeError:
        return CaptionText(path, "", "not UTF-8 text: re-save it as UTF-8 (most editors offer this)")
    problem = (f"larger than {MAX_CAPTION_BYTES // 1024} KB: only its first {MAX_CAPTION_BYTES // 1024} KB are "
               "read (more than any token limit uses); shorten it" if cut else "")
    return CaptionText(path, " ".join(text.replace("\r\n", "\n").split("\n")).strip(), problem)


def caption_extension_problem(extension: object) -> str:
    """Why EXTENSION cannot name caption files (dataset.caption_extension), or "" when it can."""
    if not isinstance(extension, str) or not _EXTENSION.match(extension):
        return "it must be a dot and 1 to 16 letters, digits, '-' or '_', e.g. .txt or .caption"
    return ""


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def join_tags(tags: list[str]) -> str:
    return ", ".join(tags)


def caption_path(image: Path, extension: str = ".txt") -> Path:
    return Path(image).with_suffix(extension)
