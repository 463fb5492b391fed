"""Closing the window while jobs run, without freezing it.

A training run asked to stop saves a checkpoint before it exits, which takes seconds to tens of seconds; the
test engine finishes the image it is drawing. Waiting for them with a blocking wait froze the window with
no word of why. Here each job is asked to stop, a small non-modal dialog says what is still running, a timer
(the event loop keeps running) notices when each has ended, and a job still running after its grace period
is ended by force. The window closes when all have ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QElapsedTimer, QThreadPool, QTimer, Signal
from PySide6.QtWidgets import QDialog, QLabel, QProgressBar, QPushButton, QVBoxLayout

POLL_MS = 50          # how often to look; a process's exit or a thread's end is seen within this
SHOW_AFTER_MS = 300   # what ends sooner (a thumbnail being read) closes the window without a flash of dialog
KILL_WAIT_MS = 3000   # after the last grace period: a killed process is gone at once, a thread cannot be killed


@dataclass
class Job:
    """Something that must end before the window closes, as the user should read it while waiting."""
    label: str                        # "Stopping the training run… (saving its checkpoint)"
    running: Callable[[], bool]
    stop: Callable[[], None]          # ask it to end cleanly
    kill: Callable[[], None] = lambda: None
    grace_ms: int = 0                 # how long it may take after stop() before kill()


def engine_job(label: str, engine, stop: Callable[[], None] | None = None, grace_ms: int = 0) -> Job:
    """An EngineProcess child: stopped (by default with its own stop, which saves), killed after the grace."""
    return Job(label, lambda: engine.running, stop or engine.stop, engine.kill, grace_ms or engine.stop_grace_ms)


def pool_job(label: str, pool: QThreadPool) -> Job:
    """Work on a thread pool: what has not started is dropped; what has finishes by itself (a thread cannot
    be killed, and the pool's signals must not outlive the window while it runs)."""
    return Job(label, lambda: pool.activeThreadCount() > 0, pool.clear)


class ClosingDialog(QDialog):
    """Asks every job to stop and says which are still running until all have ended (`all_ended`)."""
    all_ended = Signal()

    def __init__(self, jobs: list[Job], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Closing LoRA Studio")
        self.setModal(False)
        self.setMinimumWidth(460)   # the longest label on one line
        self.jobs = jobs
        self.asked: dict[int, int] = {}   # job index -> ms since closing began when it was asked to stop
        self.killed: set[int] = set()
        self.ended = False
        self.clock = QElapsedTimer()
        self.timer = QTimer(self, interval=POLL_MS)
        self.timer.timeout.connect(self._tick)
        self.waiting = QLabel()
        self.waiting.setWordWrap(True)
        self.countdown = QLabel()
        busy = QProgressBar()
        busy.setRange(0, 0)   # an endless bar: the jobs do not say how far along they are
        self.quit_now = QPushButton("Quit now, without waiting")
        self.quit_now.setToolTip("Ends them by force: a training run loses the steps since its last checkpoint")
        self.quit_now.setAutoDefault(False)   # Return must never end a training run without its save
        self.quit_now.clicked.connect(self.kill_all)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>LoRA Studio closes when these have ended:</b>"))
        for widget in (self.waiting, busy, self.countdown, self.quit_now):
            layout.addWidget(widget)

    def start(self) -> bool:
        """Ask each running job to stop; True when nothing was running (close now), else wait for
        `all_ended`."""
        self.clock.start()
        self._ask(0)
        if not self._running():
            self.ended = True
            return True
        self.timer.start()
        return False

    def reject(self) -> None:
        """Esc or the title bar's close: nothing to undo (the jobs were asked to stop), so the dialog stays."""

    def kill_all(self) -> None:
        for i in self._running():
            self.jobs[i].kill()
            self.killed.add(i)

    def _running(self) -> list[int]:
        return [i for i, job in enumerate(self.jobs) if job.running()]

    def _ask(self, now: int) -> None:
        """Stop what runs and was not asked yet (a job may start late: a rescan after a cancelled import)."""
        for i in self._running():
            if i not in self.asked:
                self.asked[i] = now
                self.jobs[i].stop()

    def _tick(self) -> None:
        now = self.clock.elapsed()
        self._ask(now)
        for i in self._running():
            if i not in self.killed and now - self.asked[i] >= self.jobs[i].grace_ms:
                self.jobs[i].kill()
                self.killed.add(i)
        running = self._running()
        if not running or now > max(job.grace_ms for job in self.jobs) + KILL_WAIT_MS:
            self._finish()
            return
        self.waiting.setText("\n".join(self.jobs[i].label for i in running))
        self.countdown.setText(self._countdown(running, now))
        if now >= SHOW_AFTER_MS and not self.isVisible():
            self.show()

    def _countdown(self, running: list[int], now: int) -> str:
        left = [self.asked[i] + self.jobs[i].grace_ms - now for i in running if i not in self.killed]
        if not left or max(left) < 1000:
            return ""
        return f"Anything still running in {max(left) // 1000 + 1} s will be ended by force."

    def _finish(self) -> None:
        self.timer.stop()
        self.ended = True
        self.hide()
        self.all_ended.emit()
