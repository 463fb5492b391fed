"""Auto-captioning through the engine: `dataset caption DIR --model FOLDER ... --events jsonl` as a child
process, like training (a model that runs out of memory or crashes takes only the child down).

Each captioned image arrives as a JSON line on stdout and becomes the `captioned` signal on the GUI thread.
Cancel asks the engine to stop between images (every caption already written stays), and kills it only if
it does not stop within a grace period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.engine_client import EngineProcess

STOP_GRACE_MS = 10_000


@dataclass
class CaptionRequest:
    folder: Path
    model: Path
    mode: str = "fill"                 # fill | append | overwrite
    threshold: float = 0.35            # WD14 general tags
    character_threshold: float = 0.85  # WD14 character tags
    exclude: str = ""                  # comma-separated tags never written
    trigger: str = ""
    force: bool = False                # replace captions the user edited since the last run
    only: list[Path] = field(default_factory=list)
    prompt: str = ""                   # vision-language models: empty means the default for `length`
    length: str = "paragraph"          # short | paragraph | long
    max_tokens: int = 0                # 0: the default for `length`
    tags_model: str = ""               # a WD14 tagger folder whose tags go before the sentence
    preview: bool = False              # caption `only` and write nothing

    def args(self) -> list[str]:
        args = ["dataset", "caption", str(self.folder), "--model", str(self.model), "--mode", self.mode,
                "--threshold", f"{self.threshold:g}", "--character-threshold", f"{self.character_threshold:g}",
                "--events", "jsonl"]
        if self.exclude.strip():
            args += ["--exclude", self.exclude.strip()]
        if self.trigger.strip():
            args += ["--trigger", self.trigger.strip()]
        if self.force:
            args.append("--force")
        if self.prompt.strip():
            args += ["--prompt", self.prompt.strip()]
        if self.length != "paragraph":
            args += ["--length", self.length]
        if self.max_tokens:
            args += ["--max-tokens", str(self.max_tokens)]
        if self.tags_model.strip():
            args += ["--tags-model", self.tags_model.strip()]
        if self.preview:
            args.append("--preview")
        if self.only:
            args += ["--only", *map(str, self.only)]
        return args


class CaptionJob(QObject):
    captioned = Signal(dict)      # {"path", "caption", "status": written|skipped|preview, "reason"}
    finished = Signal(bool, str)  # succeeded, message (the engine's error and hint when it failed)

    def __init__(self, request: CaptionRequest, parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.request = request
        self.engine = EngineProcess(self, engine, stop_grace_ms=STOP_GRACE_MS)
        self.engine.event.connect(self._event)
        self.engine.finished.connect(self._finished)
        self.written = self.skipped = 0
        self.cancelled = False

    def start(self) -> None:
        self.engine.start(self.request.args())

    def cancel(self) -> None:
        self.cancelled = True
        self.engine.stop()

    def _event(self, event) -> None:
        if event.type == "caption":
            self.written += event.status in ("written", "preview")
            self.skipped += event.status == "skipped"
            self.captioned.emit(event.to_dict())

    def _finished(self, code: int, _crashed: bool) -> None:
        failed = self.engine.last_error is not None or (code != 0 and not self.cancelled)
        error = (self.engine.error_message() or f"the engine exited with code {code}") if failed else ""
        summary = f"{self.written} captions written, {self.skipped} skipped"
        if self.cancelled:
            summary = f"Cancelled: {summary}"
        self.finished.emit(not error, error or summary)
