"""Operating-system failures while saving, as user errors: a full disk, a file past the file system's size
limit, a read-only disk, no permission. They name the file, its folder and the space free there; the
traceback and "this is a bug" stay for real bugs.

Libraries report these differently: Python raises OSError with its errno, safetensors a SafetensorError
whose text ends in "(os error 28)", and torch.save a RuntimeError without the errno ("unexpected pos"; the
engine's writer keeps the OSError beside it, trainer.run.state). `as_os_error` finds the OSError in each.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

from trainer.shared.errors import UserError

_OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)")
REASONS = {  # errno: (headline, why, what to do)
    errno.ENOSPC: ("disk full", "", "free space on that disk"),
    errno.EDQUOT: ("disk quota exceeded", "", "free space within your quota"),
    errno.EFBIG: ("file too large", "the file system (or `ulimit -f`) takes no file this large",
                  "use a disk whose file system takes large files (not FAT32), or raise `ulimit -f`"),
    errno.EROFS: ("read-only disk", "the disk is mounted read-only",
                  "make that disk writable, or move the folder to another disk"),
    errno.EACCES: ("permission denied", "you have no permission to write there",
                   "give your user write access to that folder, or use another one"),
    errno.EPERM: ("not permitted", "the system does not permit this write", "use a folder you own"),
    errno.ENOTDIR: ("a file is in the way", "a file stands where a folder belongs",
                    "move or rename that file, or choose another folder"),
    errno.EEXIST: ("a file is in the way", "a file stands where a folder belongs",
                   "move or rename that file, or choose another folder"),
    errno.EISDIR: ("a folder is in the way", "a folder stands where the file belongs",
                   "move or rename that folder, or choose another name"),
}


READ_TOO = (errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EISDIR)


def mark_saving(exc: BaseException) -> None:
    """Say that EXC (an OSError) happened while writing a file (atomic writes, snapshots do this)."""
    if isinstance(exc, OSError):
        exc.while_saving = True


class SaveFailed(UserError):
    """The operating system refused to write a file (see REASONS)."""


class DiskFull(SaveFailed):
    pass


def as_os_error(exc: BaseException) -> OSError | None:
    """The OSError behind EXC, whichever library raised it, or None when EXC is not one."""
    if isinstance(exc, OSError):
        return exc
    recorded = getattr(exc, "os_error", None)
    if isinstance(recorded, OSError):
        return recorded
    match = _OS_ERROR_TEXT.search(str(exc))
    if match:
        code = int(match[1])
        return OSError(code, os.strerror(code))
    return None


def save_failure(exc: BaseException, folder: Path | None = None, then: str = "", need: str = "",
                 intact: str = "") -> SaveFailed | None:
    """A SaveFailed for EXC when the OS refused a write, or None (then EXC is for the caller to raise).
    FOLDER: where the file was going when EXC does not say; THEN: what to do next (e.g. resume); NEED: the
    advice for a full disk, when the caller knows how much one save takes; INTACT: what was not harmed."""
    err = as_os_error(exc)
    if err is None or err.errno not in REASONS:
        return None
    if err.errno in READ_TOO and not getattr(err, "while_saving", False):
        return None  # these happen on reads too: only a write we marked is a failed save
    headline, why, advice = REASONS[err.errno]
    target = Path(err.filename) if isinstance(err.filename, (str, os.PathLike)) else None
    where = _existing_folder(target.parent if target else Path(folder or Path.cwd()))
    free = human_size(shutil.disk_usage(where).free)
    message = f"{headline} while saving {target or 'into ' + str(where)} ({free} free)"
    message += "".join(f"; {part}" for part in (why, intact) if part)
    full = err.errno in (errno.ENOSPC, errno.EDQUOT)
    hint = (need if need and full else advice) + (f", {then}" if then else "")
    return (DiskFull if full else SaveFailed)(message, hint)


def _existing_folder(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    return Path.cwd()


def human_size(size: float) -> str:
    if size < 2**20:
        return f"{size / 1024:.0f} KB"
    return f"{size / 2**20:.0f} MB" if size < 2**30 else f"{size / 2**30:.1f} GB"
