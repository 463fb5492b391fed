"""The training engine as a child process: QProcess <-> the JSON-lines events of trainer.events.

The GUI never trains in its own process: a CUDA OOM or a native crash kills only the child, and exiting it
frees all GPU memory. Decoded events arrive as Qt signals on the GUI thread (QProcess delivers its
readyRead signals there), so widgets are only ever touched from the GUI thread.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from trainer.events import Event, ProtocolError, decode

STOP_GRACE_MS = 30_000   # a clean stop saves a checkpoint first; a big model's save can take a while
STDERR_TAIL = 60


class EngineProcess(QObject):
    event = Signal(object)           # any trainer.events.Event
    log_line = Signal(str)           # human-readable stderr lines
    finished = Signal(int, bool)     # exit code, crashed (killed or died without a done/error event)

    def __init__(self, parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.engine = engine or [sys.executable, "-m", "trainer"]
        self.proc: QProcess | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.last_error: Event | None = None
        self.saw_done = False
        self._buffer = b""
        self._err_buffer = b""
        self._kill_timer = QTimer(self, singleShot=True, interval=STOP_GRACE_MS)
        self._kill_timer.timeout.connect(self.kill)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.state() != QProcess.ProcessState.NotRunning

    def train(self, config: Path | None, run_dir: Path, overrides: list[str] = (), demo: bool = False) -> None:
        args = ["train"] + ([str(config)] if config else []) + (["--demo"] if demo else [])
        args += ["--out", str(run_dir), "--events", "jsonl"]
        for item in overrides:
            args += ["--set", item]
        self._start(args)

    def resume(self, run_dir: Path) -> None:
        self._start(["resume", str(run_dir), "--events", "jsonl"])

    def serve(self, model: str | None = None) -> None:
        """The long-lived generate engine (`serve`): requests go in with `request`, events come out."""
        self._start(["serve"] + (["--model", model] if model else []))

    def request(self, payload: dict) -> None:
        """One JSON request line (serve's generate/load/cancel...; train's stop/sample/save)."""
        if self.running:
            self.proc.write((json.dumps(payload) + "\n").encode())

    def _start(self, args: list[str]) -> None:
        if self.running:
            raise RuntimeError("the engine is already running")
        self.stderr_tail.clear()
        self.last_error, self.saw_done, self._buffer, self._err_buffer = None, False, b"", b""
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("HF_HUB_OFFLINE", "1")
        proc.setProcessEnvironment(env)
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._on_finished)
        self.proc = proc
        proc.start(self.engine[0], self.engine[1:] + args)

    def send(self, cmd: str) -> None:
        self.request({"cmd": cmd})

    def stop(self) -> None:
        """Ask for a clean stop (the engine saves first); kill only if it doesn't exit in time."""
        self.send("stop")
        self._kill_timer.start()

    def kill(self) -> None:
        if self.running:
            self.proc.kill()

    def _read_stdout(self) -> None:
        self._buffer += bytes(self.proc.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            self._handle_line(raw.decode("utf-8", "replace"))

    def _handle_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            event = decode(line)
        except ProtocolError as exc:
            self.log_line.emit(f"(engine printed a line that is not an event: {exc})")
            return
        if event.type == "error":
            self.last_error = event
        if event.type == "done":
            self.saw_done = True
        self.event.emit(event)

    def _read_stderr(self) -> None:
        self._err_buffer += bytes(self.proc.readAllStandardError())
        *lines, self._err_buffer = self._err_buffer.split(b"\n")
        for raw in lines:
            text = raw.decode("utf-8", "replace").rstrip("\r")
            text = text.rsplit("\r", 1)[-1]  # keep the last state of a progress-bar line
            self.stderr_tail.append(text)
            self.log_line.emit(text)

    def _on_finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        self._read_stdout()
        if self._buffer:
            self._handle_line(self._buffer.decode("utf-8", "replace"))
            self._buffer = b""
        crashed = status == QProcess.ExitStatus.CrashExit or (not self.saw_done and self.last_error is None)
        self.finished.emit(code, crashed)
