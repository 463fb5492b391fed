"""The one rule for every name that becomes a path (saving.output_name, export --name, `<lora:NAME>` tags,
image names in serve requests, import targets): it stays inside the folder it is meant for, or it is refused
with the key that named it.

A name is a file name, not a path: no separator (either slash: a config shared from Windows uses `\\`), no
`.` or `..`, nothing absolute, no NUL or control character, none of the characters Windows refuses in names
(`< > : " | ? *`) and no glob brackets, so a name means the same file on every OS and is never read as a
pattern. Where a name may reach into subfolders (`<lora:styles/ink:1>` in a LoRA folder), each part obeys
the same rule. The check is on the text, not on the resolved path: a folder the user linked elsewhere (a
models folder on another disk) stays usable, and what the text says decides what can be named.
"""

from __future__ import annotations

import re
from pathlib import Path

from trainer.shared.errors import UserError

_FORBIDDEN = re.compile(r'[\x00-\x1f<>:"|?*\[\]]')
MAX_NAME = 200   # characters: well under every filesystem's 255-byte limit, with room for "-step000123.ema…"


def name_problem(name: object, subfolders: bool = False) -> str:
    """Why NAME cannot be used as a file name inside a folder, or "" when it can."""
    if not isinstance(name, str) or not name.strip():
        return "it is empty"
    if len(name) > MAX_NAME:
        return f"it is {len(name)} characters long (at most {MAX_NAME})"
    parts = re.split(r"[\\/]", name)
    if len(parts) > 1 and not subfolders:
        return "it contains a path separator ('/' or '\\'); give a file name only"
    for part in parts:
        if part in ("", ".", ".."):
            return "it leads outside its folder ('..', a leading or doubled separator)"
        if match := _FORBIDDEN.search(part):
            return f"it contains {match[0]!r}, which is not allowed in file names"
        if part != part.strip() or part.endswith("."):
            return "a part of it starts or ends with a space, or ends with '.' (Windows drops them)"
    return ""


def check_name(name: object, key: str, subfolders: bool = False, error: type[UserError] = UserError) -> str:
    """NAME, or an ERROR naming KEY and what is wrong."""
    problem = name_problem(name, subfolders)
    if problem:
        raise error(f"{key} {name!r} cannot be used as a file name: {problem}",
                        "use letters, digits, spaces, '-', '_' and '.' (e.g. my-lora)")
    return name


def contained_path(folder: Path, name: str, key: str, suffix: str = "", subfolders: bool = False) -> Path:
    """FOLDER / (NAME + SUFFIX), refused with KEY when NAME would leave FOLDER or is not a usable name."""
    check_name(name, key, subfolders)
    return Path(folder).joinpath(*re.split(r"[\\/]", name + suffix))
