"""Atomic file writes: a reader (or a crash) only ever sees the old complete file or the new complete one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from trainer.shared import faults
from trainer.shared.save_errors import mark_saving


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; the files we write are meant to be read by other
# programs (A1111 running as another user, a file server), so give them the permissions a plain open() would.
FILE_MODE = 0o666 & ~_current_umask()


def atomic_write(path: Path, write: Callable[[Path], None], durable: bool = True) -> None:
    """Call `write(tmp_path)` for a temp file in the same folder, fsync it, then rename it over `path`.

    durable=False skips both fsyncs, for caches whose reader checks every entry: a crash may lose the newest
    entries (they are rebuilt) but never leaves a half-written one under the final name."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _saving(exc, path)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        faults.point(f"write{path.suffix}")
        if durable:
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        _saving(exc, path)
        raise


def _saving(exc: BaseException, path: Path) -> None:
    if isinstance(exc, OSError) and exc.filename is None:
        exc.filename = str(path)  # "disk full while saving PATH" names the file the user knows
    mark_saving(exc)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data), durable)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(folder: Path) -> None:
    # The rename itself is durable only once the directory entry is flushed (POSIX); Windows has no dir fds.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_held: list = []  # open lock files: a lock lasts as long as its file stays open, i.e. this process


def lock_folder(folder: Path) -> str | None:
    """Take FOLDER/.lock for this process. Returns None, or the pid recorded by the process holding it.

    The operating system drops the lock when the holder exits, however it exits (SIGKILL included), so a
    crash never leaves a stale lock. POSIX only; elsewhere every call succeeds.
    """
    try:
        import fcntl
    except ImportError:
        return None
    fh = open(Path(folder) / ".lock", "a+", encoding="ascii")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "?"
        fh.close()
        return holder
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    _held.append(fh)
    return None


def sha256_of(path: Path) -> str:
    """A file's SHA-256, read in 1 MB blocks (run snapshots, the training adapter, A1111's LoRA hashes)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
