"""Errors a user can act on: each names the thing that is wrong and says what to do.

The CLI prints `message` and `hint` (and emits an `error` event) instead of a traceback.
"""


def some_files(paths: list, limit: int = 5) -> str:
    """The first LIMIT of PATHS for a message, "…" when there are more (the full list goes elsewhere)."""
    return ", ".join(str(p) for p in paths[:limit]) + (" …" if len(paths) > limit else "")


class UserError(Exception):
    """A problem with the user's input (file, config, dataset) rather than a bug in LoRA Studio."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(UserError):
    """A config key is unknown, mistyped or out of range. The message names the dotted key."""


class ModelFileError(UserError):
    """A model file is missing, truncated, not a checkpoint, unsafe, or the wrong kind of file."""


class DatasetError(UserError):
    """The dataset folder is missing, empty or unreadable."""
