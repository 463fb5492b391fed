"""Where events go: the JSON-lines stream on the real stdout, a copy in RUN_DIR/events.jsonl, and a
progress bar plus readable log lines on stderr for people at a terminal."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import TextIO

from trainer.shared.events import Event, Progress

log = logging.getLogger("trainer")


def claim_stdout_for_events() -> TextIO:
    """Dup the real stdout for events and point fd 1 and sys.stdout at stderr.

    Libraries print (tqdm, warnings, C++ extensions writing to fd 1); none of it may corrupt the stream.
    """
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(events_fd, "w", buffering=1, encoding="utf-8")


class EventSink:
    def __init__(self, stream: TextIO | None, progress_bar: bool):
        self.stream = stream
        self.copy: TextIO | None = None
        self.lock = threading.Lock()
        self.bar = None
        self.progress_bar = progress_bar
        self.enabled = True  # off on non-main ranks of a multi-GPU run

    def attach_run_dir(self, run_dir: Path) -> None:
        path = Path(run_dir) / "events.jsonl"
        _drop_torn_last_line(path)
        self.copy = open(path, "a", encoding="utf-8", buffering=1)

    def emit(self, event: Event) -> None:
        if not self.enabled:
            if event.type == "error":  # another process of a multi-GPU run failed: say so in the log
                log.error("process %s: %s", os.environ.get("RANK", "?"), human_text(event))
            return
        line = event.encode()
        with self.lock:
            if self.stream is not None:
                self.stream.write(line + "\n")
                self.stream.flush()
            self._copy(line)
        self._show(event)

    def _copy(self, line: str) -> None:
        """events.jsonl: a full or read-only disk ends the copy, never the run (the stream goes on, and the
        save that meets the same disk says what to do)."""
        if self.copy is None:
            return
        try:
            self.copy.write(line + "\n")
            self.copy.flush()
        except OSError as exc:
            log.warning("events.jsonl is no longer written: %s", exc)
            self.close_copy()

    def _show(self, event: Event) -> None:
        if isinstance(event, Progress):
            self._bar(event)
            return
        text = human_text(event)
        if not text:
            return
        if event.type == "caption" and self.stream is None:
            print(text, flush=True)  # a command's result: stdout, when stdout does not carry the events
        elif self.bar is not None:
            self.bar.write(text, file=sys.stderr)  # keeps the progress bar intact below the line
        elif event.type == "error":
            log.error("%s", text)
        else:
            log.info("%s", text)

    def _bar(self, event: Progress) -> None:
        if not self.progress_bar:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=event.total, file=sys.stderr, unit="step", dynamic_ncols=True)
        self.bar.n = event.step
        self.bar.set_postfix(loss=f"{event.loss:.4f}", epoch=event.epoch, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.close_copy()

    def close_copy(self) -> None:
        copy, self.copy = self.copy, None
        if copy is not None:
            try:
                copy.close()
            except OSError:  # the last lines could not be flushed to a full disk: the stream had them
                pass


def _drop_torn_last_line(path: Path) -> None:
    """A run killed mid-write can leave a partial last line; cut it before appending, so that every line
    of the copy stays one whole JSON object (a resumed run would otherwise glue its first event onto it)."""
    if not path.exists():
        return
    with open(path, "rb+") as fh:  # from the end, in blocks: a long run's copy may be gigabytes
        end = pos = fh.seek(0, 2)
        if end == 0 or (fh.seek(end - 1) >= 0 and fh.read(1) == b"\n"):
            return
        while pos > 0:
            size = min(1 << 16, pos)
            pos -= size
            fh.seek(pos)
            cut = fh.read(size).rfind(b"\n")
            if cut >= 0:
                fh.truncate(pos + cut + 1)
                return
        fh.truncate(0)


def human_text(event: Event) -> str:
    """One readable line per event for people at a terminal (the GUI reads the JSON instead); empty for
    events the command already tells in its own words."""
    t = event.type
    if t == "caption":
        detail = f"skipped: {event.reason}" if event.status == "skipped" else \
            event.caption + (f"  (note: {event.reason})" if event.reason else "")
        return f"[{event.done}/{event.total}] {event.path}: {detail}"
    if t == "caption_summary" or (t == "done" and not event.adapter):
        return ""
    if t == "started":
        resumed = f", resuming from step {event.resumed_from}" if event.resumed_from else ""
        return f"training {event.total_steps} steps of a {event.arch} LoRA on {event.device}{resumed} -> {event.run_dir}"
    if t == "sample":
        return f"sample (step {event.step}): {event.path}"
    if t == "checkpoint":
        return f"checkpoint (step {event.step}): {event.path}"
    if t == "ready":
        return f"ready: {event.model} ({event.arch}) on {event.device}"
    if t == "image":
        return f"image: {event.path}"
    if t == "job_done":
        return f"job {event.job or '-'} {'cancelled' if event.cancelled else 'done'}: {event.images} images"
    if t in ("warning", "error"):
        return f"{t}: {event.message}" + (f"\n  hint: {event.hint}" if event.hint else "")
    if t == "done":
        if event.stopped_early:
            run_dir = os.path.dirname(event.adapter)
            return (f"stopped at step {event.step}; adapter saved: {event.adapter}\n"
                    f"  continue with: lora-studio resume {run_dir}")
        return f"done at step {event.step}: {event.adapter}"
    return event.encode()
