"""Auto-captioning through the engine: `dataset caption DIR --model FOLDER ... --events jsonl` as a child
process, like training (a model that runs out of memory or crashes takes only the child down).

Each captioned image arrives as a JSON line on stdout and becomes the `captioned` signal on the GUI thread.
Cancel asks the engine to stop between images (every caption already written stays), and kills it only if
it does not stop within a grace period.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QTimer, Signal

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
        self.engine = engine or [sys.executable, "-m", "trainer"]
        self.request = request
        self.proc = QProcess(self)
        self.proc.readyReadStandardOutput.connect(self._read)
        self.proc.finished.connect(self._finished)
        self._buffer = b""
        self.error = ""
        self.written = self.skipped = 0
        self.cancelled = False
        self._kill = QTimer(self, singleShot=True, interval=STOP_GRACE_MS)
        self._kill.timeout.connect(self.proc.kill)

    def start(self) -> None:
        self.proc.start(self.engine[0], self.engine[1:] + self.request.args())

    def cancel(self) -> None:
        self.cancelled = True
        self.proc.write(b'{"cmd": "stop"}\n')
        self._kill.start()

    def _read(self) -> None:
        self._buffer += bytes(self.proc.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            self._line(raw.decode("utf-8", "replace"))

    def _line(self, line: str) -> None:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return  # not ours: the engine keeps stdout for events, but be lenient
        kind = event.get("type")
        if kind == "caption":
            self.written += event.get("status") in ("written", "preview")
            self.skipped += event.get("status") == "skipped"
            self.captioned.emit(event)
        elif kind == "error":
            self.error = event.get("message", "") + (f"\n{event['hint']}" if event.get("hint") else "")

    def _finished(self, code: int, _status) -> None:
        self._kill.stop()
        self._read()
        if self._buffer.strip():
            self._line(self._buffer.decode("utf-8", "replace"))
        if not self.error and code != 0 and not self.cancelled:
            tail = bytes(self.proc.readAllStandardError()).decode("utf-8", "replace").strip().splitlines()
            self.error = tail[-1] if tail else f"the engine exited with code {code}"
        summary = f"{self.written} captions written, {self.skipped} skipped"
        if self.cancelled:
            summary = f"Cancelled: {summary}"
        self.finished.emit(not self.error, self.error or summary)
