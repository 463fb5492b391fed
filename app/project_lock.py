"""One window per project: two LoRA Studio windows editing the same captions and config would overwrite each
other's changes. QLockFile holds `.lora-studio.lock` in the project folder with our process id; a lock
left behind by a crashed process is detected (dead pid) and taken over."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QLockFile

LOCK_NAME = ".lora-studio.lock"


class ProjectLocked(Exception):
    pass


def lock_project(folder: Path) -> QLockFile:
    """Lock the project or raise ProjectLocked with a message naming who holds it and what to do."""
    lock = QLockFile(str(Path(folder) / LOCK_NAME))
    lock.setStaleLockTime(0)  # never time out a live holder; dead holders are still detected by pid
    if lock.tryLock(200):
        return lock
    info = lock.getLockInfo()  # PySide returns (pid, host, app name), or something falsy when unreadable
    holder = f"process {info[0]} on {info[1]}" if info and len(info) == 3 else "another program"
    raise ProjectLocked(f"{Path(folder).name} is already open in another LoRA Studio window ({holder}). "
                        "Close it there first: two windows editing the same captions and settings would "
                        "overwrite each other's changes.")
