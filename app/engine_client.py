"""Every call from the GUI to the engine (`python -m trainer ...`) goes through here, as a child process.

The GUI never imports torch and never trains in its own process: a CUDA OOM or a native crash kills only the
child, and exiting it frees all GPU memory. Two shapes of call:

- `EngineCall`: one short command (`inspect`, `system`, `plan`, `dataset check`, `export` ...) that prints
  one JSON answer on stdout; `done(answer, error)` arrives on the GUI thread.
- `EngineProcess`: a long command (`train`, `resume`, `serve`, `dataset caption --model`) that streams
  JSON-lines events (trainer.shared.events) on stdout and logs on stderr; requests go in on stdin.

Process start, environment, reading whole lines (`LineBuffer`, both classes), event decoding and
kill-after-grace live here once; how an error reads is app.engine_events'. Tests plug a fake engine in with `engine=[python, fake.py]` or `use_engine(...)`.
"""

from __future__ import annotations

import json
import sys
from collections import deque

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from app.engine_events import event_text, stderr_text
from trainer.shared.events import Event, ProtocolError, decode

STOP_GRACE_MS = 30_000   # a clean stop saves a checkpoint first; a big model's save can take a while
STDERR_TAIL = 60
_default: list[str] | None = None


def engine_command() -> list[str]:
    """The engine as a command line: this Python running the trainer package, unless a test swapped it."""
    return list(_default or [sys.executable, "-m", "trainer"])


def use_engine(command: list[str] | None) -> None:
    """Every call made without an explicit `engine=` runs COMMAND from now on (None: the real engine)."""
    global _default
    _default = list(command) if command else None


def start_engine(parent: QObject, args: list[str], engine: list[str] | None = None) -> QProcess:
    """The one place a child process is made: unbuffered output, no network model downloads."""
    command = list(engine) if engine else engine_command()
    proc = QProcess(parent)
    env = QProcessEnvironment.systemEnvironment()
    env.insert("PYTHONUNBUFFERED", "1")
    env.insert("HF_HUB_OFFLINE", "1")
    proc.setProcessEnvironment(env)
    proc.start(command[0], command[1:] + list(args))
    return proc


class LineBuffer:
    """Bytes in as a pipe delivers them, whole lines out. A pipe read ends wherever the OS cut it, so a
    line can arrive in two reads: decoding halves would turn one JSON event into two garbage lines (and
    split a multi-byte character). One buffer per stream."""

    def __init__(self):
        self._rest = b""

    def feed(self, data: bytes) -> list[str]:
        """The lines DATA completes; an unfinished last line waits for the next read."""
        *lines, self._rest = (self._rest + data).split(b"\n")
        return [_line(raw) for raw in lines]

    def flush(self) -> list[str]:
        """At exit: the last line, if the engine ended without a newline."""
        raw, self._rest = self._rest, b""
        return [_line(raw)] if raw else []


def _line(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").rstrip("\r")
    return text.rsplit("\r", 1)[-1]  # a progress bar redraws its line with \r: keep its last state


class EngineCall(QObject):
    """One command whose answer is a JSON document on stdout (or, with `json_answer=False`, just its exit)."""
    done = Signal(object, str)   # the parsed JSON answer (None on failure), the error text
    stderr_line = Signal(str)    # each line the engine logs, as it comes (progress reports)

    def __init__(self, args: list[str], parent=None, engine: list[str] | None = None,
                 timeout_ms: int = 0, json_answer: bool = True):
        super().__init__(parent)
        self.json_answer = json_answer
        self.cancelled = False
        self.stderr = ""
        self._err_lines = LineBuffer()
        self.proc = start_engine(self, args, engine)
        self.proc.readyReadStandardError.connect(self._read_stderr)
        self.proc.finished.connect(self._finished)
        self.proc.errorOccurred.connect(self._failed_to_start)
        if timeout_ms:
            QTimer.singleShot(timeout_ms, self, self._timed_out)

    def cancel(self) -> None:
        """Kill it now: used for calls whose every write is atomic (imports), so nothing is left half-done."""
        self.cancelled = True
        self.proc.kill()

    def _timed_out(self) -> None:
        if self.proc.state() != QProcess.ProcessState.NotRunning:
            self.stderr += "\nerror: the engine did not answer in time"
            self.proc.kill()

    def _read_stderr(self) -> None:
        self._log(self._err_lines.feed(bytes(self.proc.readAllStandardError())))

    def _log(self, lines: list[str]) -> None:
        for line in lines:
            self.stderr += line + "\n"
            self.stderr_line.emit(line)

    def _finished(self, code: int, _status) -> None:
        self._read_stderr()
        self._log(self._err_lines.flush())
        # the answer is read once the engine has exited, so it is whole: no line buffer needed on stdout
        out = bytes(self.proc.readAllStandardOutput()).decode("utf-8", "replace")
        if code != 0 or self.cancelled:
            self.done.emit(None, "cancelled" if self.cancelled else
                           stderr_text(self.stderr) or f"the engine exited with code {code}")
        elif not self.json_answer:
            self.done.emit(out, "")
        else:
            try:
                self.done.emit(json.loads(out), "")
            except json.JSONDecodeError:
                self.done.emit(None, f"the engine's answer was not JSON: {out[:200]!r}")

    def _failed_to_start(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.done.emit(None, f"could not start the engine ({self.proc.program()})")


class EngineProcess(QObject):
    """A long-lived engine child streaming events; one at a time per object, restartable."""
    event = Signal(object)           # any trainer.shared.events.Event
    log_line = Signal(str)           # human-readable stderr lines
    finished = Signal(int, bool)     # exit code, crashed (killed or died without a done/error event)

    def __init__(self, parent=None, engine: list[str] | None = None, stop_grace_ms: int = STOP_GRACE_MS):
        super().__init__(parent)
        self.engine = engine
        self.proc: QProcess | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.last_error: Event | None = None
        self.saw_done = False
        self._out_lines, self._err_lines = LineBuffer(), LineBuffer()
        self.stop_grace_ms = stop_grace_ms
        self._kill_timer = QTimer(self, singleShot=True, interval=stop_grace_ms)
        self._kill_timer.timeout.connect(self.kill)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.state() != QProcess.ProcessState.NotRunning

    def train(self, config, run_dir, overrides: list[str] = (), demo: bool = False) -> None:
        args = ["train"] + ([str(config)] if config else []) + (["--demo"] if demo else [])
        args += ["--out", str(run_dir), "--events", "jsonl"]
        for item in overrides:
            args += ["--set", item]
        self.start(args)

    def resume(self, run_dir) -> None:
        self.start(["resume", str(run_dir), "--events", "jsonl"])

    def serve(self, model: str | None = None) -> None:
        """The long-lived generate engine (`serve`): requests go in with `request`, events come out."""
        self.start(["serve"] + (["--model", model] if model else []))

    def start(self, args: list[str]) -> None:
        if self.running:
            raise RuntimeError("the engine is already running")
        self.stderr_tail.clear()
        self.last_error, self.saw_done = None, False
        self._out_lines, self._err_lines = LineBuffer(), LineBuffer()
        self.proc = start_engine(self, args, self.engine)
        self.proc.readyReadStandardOutput.connect(self._read_stdout)
        self.proc.readyReadStandardError.connect(self._read_stderr)
        self.proc.finished.connect(self._on_finished)

    def request(self, payload: dict) -> None:
        """One JSON request line (serve's generate/load/cancel...; train's stop/sample/save)."""
        if self.running:
            self.proc.write((json.dumps(payload) + "\n").encode())

    def send(self, cmd: str) -> None:
        self.request({"cmd": cmd})

    def stop(self) -> None:
        """Ask for a clean stop (the engine saves first); kill only if it doesn't exit in time."""
        self.send("stop")
        self._kill_timer.start()

    def kill(self) -> None:
        if self.running:
            self.proc.kill()

    def close_input(self) -> None:
        """No more requests: `serve` exits once it has read everything before this."""
        if self.running:
            self.proc.closeWriteChannel()

    def wait(self, ms: int) -> bool:
        """Block until the child exits, at most MS ms; True when it did. For tests and scripts: the window
        never calls it (closing waits through app.closing, with the event loop running)."""
        return not self.running or self.proc.waitForFinished(ms)

    def error_message(self) -> str:
        """Why the last run failed: its error event, else the last log line."""
        if self.last_error is not None:
            return event_text(self.last_error)
        return stderr_text("\n".join(self.stderr_tail))

    def _read_stdout(self) -> None:
        for line in self._out_lines.feed(bytes(self.proc.readAllStandardOutput())):
            self._handle_line(line)

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
        self._log(self._err_lines.feed(bytes(self.proc.readAllStandardError())))

    def _log(self, lines: list[str]) -> None:
        for line in lines:
            self.stderr_tail.append(line)
            self.log_line.emit(line)

    def _on_finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        self._read_stdout()
        self._read_stderr()
        for line in self._out_lines.flush():
            self._handle_line(line)
        self._log(self._err_lines.flush())
        crashed = status == QProcess.ExitStatus.CrashExit or (not self.saw_done and self.last_error is None)
        self.finished.emit(code, crashed)
