"""What LoRA Studio remembers between sessions. Every QSettings read and write goes through here, so the
keys, their types and the recent-list rules live in one place (tests point QSettings at a temp folder)."""

from __future__ import annotations

from PySide6.QtCore import QSettings

RECENT_MODELS = "recent_models"
RECENT_PROJECTS = "recent"
LAST_PROJECT = "last_project"
PROJECTS_DIR = "projects_dir"
GEOMETRY = "geometry"
EXPORT_FOLDER = "export/folder"
CAPTION_MODEL = "caption_model_folder"
CAPTION_TAGS_MODEL = "caption_tags_model_folder"
SYSTEM_FACTS_SEEN = "system_facts_seen"
RECENT_KEEP = 10


def _store() -> QSettings:
    return QSettings("LoRA Studio", "LoRA Studio")


def text(key: str, default: str = "") -> str:
    return _store().value(key, default, type=str)


def flag(key: str, default: bool = False) -> bool:
    return _store().value(key, default, type=bool)


def raw(key: str):
    """A value Qt stores as it is (window geometry bytes), or None."""
    return _store().value(key)


def put(key: str, value) -> None:
    _store().setValue(key, value)


def recent(key: str) -> list[str]:
    return _store().value(key, [], type=list)


def remember(key: str, item: str) -> None:
    """Put ITEM first in the recent list KEY (no duplicates, the newest ten)."""
    put(key, ([item] + [old for old in recent(key) if old != item])[:RECENT_KEEP])
