"""The run page: start/stop a run and watch it live (progress, loss, previews, the engine's log).

If the engine dies, the page stays up and says what happened: the exit code, the engine's error message
and hint, and the end of its log, with a Resume button.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.closing import Job, engine_job
from app.dialogs.export_dialog import ExportDialog
from app.dialogs.image_viewer import ImageViewer
from app.engine_client import EngineProcess
from app.engine_events import dispatch, event_text
from app.widgets.gallery import SampleGallery
from app.widgets.loss_chart import LossChart
from trainer.shared.run_folder import STATE_DIR, adapters_in, checkpoint_for_step


class RunPage(QWidget):
    run_finished = Signal(bool)  # succeeded
    test_requested = Signal(str)  # an adapter to open on the Test page
    engine_state = Signal(str)   # one line for the window's status bar: what the training engine is doing

    def __init__(self, engine: EngineProcess | None = None, parent=None):
        super().__init__(parent)
        self.engine = engine or EngineProcess(self)
        self.run_dir: Path | None = None
        self.config: Path | None = None
        self.demo = False
        self.overrides: list[str] = []
        self._build()
        self.engine.event.connect(self.on_event)
        self.engine.log_line.connect(self.log.appendPlainText)
        self.engine.finished.connect(self.on_finished)
        self._set_running(False)

    def _build(self) -> None:
        icon = self.style().standardIcon
        pix = QStyle.StandardPixmap
        self.start_button = QPushButton(icon(pix.SP_MediaPlay), "Start")
        self.start_button.setToolTip("Start training (Ctrl+Return)")
        self.stop_button = QPushButton(icon(pix.SP_MediaStop), "Stop (saves first)")
        self.stop_button.setToolTip("Stop after saving a checkpoint you can resume from (Esc)")
        self.sample_button = QPushButton(icon(pix.SP_FileDialogContentsView), "Sample now")
        self.save_button = QPushButton(icon(pix.SP_DialogSaveButton), "Save now")
        self.resume_button = QPushButton(icon(pix.SP_MediaSeekForward), "Resume")
        self.compare_button = QPushButton("Compare selected")
        self.compare_button.setToolTip("Two selected previews side by side (select with Ctrl+click)")
        self.export_button = QPushButton(icon(pix.SP_DialogOpenButton), "Export…")
        self.export_button.setToolTip("Export the final adapter, or the checkpoint of the sample you selected")
        self.export_button.clicked.connect(self.open_export)
        self.test_button = QPushButton("Test this checkpoint")
        self.test_button.setToolTip("Open the Test page with the checkpoint of the selected sample "
                                    "(or the final adapter), to generate with it and compare strengths")
        self.test_button.clicked.connect(self.test_checkpoint)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.sample_button.clicked.connect(lambda: self.engine.send("sample"))
        self.save_button.clicked.connect(lambda: self.engine.send("save"))
        self.resume_button.clicked.connect(self.resume)
        self.compare_button.clicked.connect(self.compare)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.sample_button, self.save_button, self.resume_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.compare_button)
        buttons.addWidget(self.test_button)
        buttons.addWidget(self.export_button)
        self.progress = QProgressBar()
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.chart = LossChart()
        self.gallery = SampleGallery()
        self.gallery.image_activated.connect(self.view_image)
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setMaximumBlockCount(5000)
        split = QSplitter()
        split.addWidget(self.gallery)
        right = QSplitter()
        right.setOrientation(right.orientation().__class__.Vertical)
        right.addWidget(self.chart)
        right.addWidget(self.log)
        split.addWidget(right)
        split.setSizes([620, 420])
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(split, 1)

    def prepare(self, run_dir: Path, config: Path | None = None, demo: bool = False,
                overrides: list[str] = (), keep_status: bool = False) -> None:
        self.run_dir, self.config, self.demo, self.overrides = Path(run_dir), config, demo, list(overrides)
        if not keep_status:  # after a run, its outcome ("Done at step N. Adapter: …") stays readable
            self.status.setText(f"Ready to train into {self.run_dir}")

    def show_past_run(self, folder: Path) -> None:
        """A finished (or stopped) run: its previews, and Resume when it saved a state to resume from."""
        self.prepare(folder)
        self.gallery.clear()
        self.gallery.load_run(folder)
        self.status.setText(f"Past run: {folder}")
        self.resume_button.setVisible((Path(folder) / STATE_DIR).is_dir())

    def stop(self) -> None:
        """A clean stop: the engine saves a checkpoint first (killed only if it does not exit in time)."""
        self.engine.stop()
        self.engine_state.emit("Training engine: stopping (saving a checkpoint first)…")

    def closing_jobs(self) -> list[Job]:
        """The window is closing: the run stops cleanly, saving a checkpoint to resume from."""
        return [engine_job("Stopping the training run… (saving its checkpoint)", self.engine, self.stop)]

    @property
    def running(self) -> bool:
        return self.engine.running

    def start(self) -> None:
        if self.run_dir is None:
            return
        self._reset()
        self.engine.train(self.config, self.run_dir, self.overrides, demo=self.demo)
        self._set_running(True)

    def resume(self) -> None:
        if self.run_dir is None:
            return
        self.resume_button.setVisible(False)
        self.engine.resume(self.run_dir)
        self._set_running(True)

    def view_image(self, path: str) -> None:
        """One preview large; the arrow keys walk the gallery (steps left/right, prompts up/down)."""
        ImageViewer([path], self, step=self.gallery.neighbour).exec()

    def compare(self) -> None:
        paths = self.gallery.selected_paths()
        if len(paths) >= 2:
            ImageViewer(paths[:2], self).exec()

    def export_dialog(self) -> ExportDialog:
        selected, steps = self.gallery.selected_paths(), self.gallery.selected_steps()
        return ExportDialog(self.run_dir, selected[0] if selected else None, steps[0] if steps else None, self)

    def test_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        steps = self.gallery.selected_steps()
        adapter = checkpoint_for_step(self.run_dir, steps[0]) if steps else None
        adapter = adapter or next(iter(adapters_in(self.run_dir)), None)
        if adapter is None:
            self.status.setText("No adapter or checkpoint in this run yet: wait for the first checkpoint.")
            return
        self.test_requested.emit(str(adapter))

    def open_export(self) -> None:
        if self.run_dir is not None:
            self.export_dialog().exec()

    def _reset(self) -> None:
        self.chart.clear()
        self.gallery.clear()
        self.progress.setValue(0)
        self.resume_button.setVisible(False)

    def _set_running(self, running: bool) -> None:
        self.engine_state.emit("Training engine: starting…" if running else "Training engine: idle")
        self.start_button.setEnabled(not running)
        for b in (self.stop_button, self.sample_button, self.save_button):
            b.setEnabled(running)
        if running:
            self.resume_button.setVisible(False)

    def on_event(self, event) -> None:
        dispatch(self, event)

    def _on_started(self, e) -> None:
        self.progress.setMaximum(e.total_steps)
        self.progress.setValue(e.resumed_from)
        where = f", resuming at step {e.resumed_from}" if e.resumed_from else ""
        self.status.setText(f"Training a {e.arch} LoRA on {e.device}{where}…")

    def _on_progress(self, e) -> None:
        self.progress.setMaximum(e.total)
        self.progress.setValue(e.step)
        self.progress.setFormat(f"step {e.step} / {e.total}")
        self.status.setText(f"Step {e.step} of {e.total} · epoch {e.epoch} · {e.it_s:.2f} it/s · "
                            f"ETA {_duration(e.eta_s)} · loss {e.loss:.4f}")
        self.chart.add_point(e.step, e.loss)
        self.engine_state.emit(f"Training engine: step {e.step} / {e.total} · {e.it_s:.2f} it/s · "
                               f"ETA {_duration(e.eta_s)}")

    def _on_validation(self, e) -> None:
        self.chart.add_validation_point(e.step, e.loss)

    def _on_sample(self, e) -> None:
        self.gallery.add_sample(e.path, e.prompt, e.step, e.index)

    def _on_warning(self, e) -> None:
        self.log.appendPlainText(f"warning: {event_text(e)}")

    def _on_done(self, e) -> None:
        verb = "Stopped at" if e.stopped_early else "Finished at"
        self.status.setText(f"{verb} step {e.step}. Adapter: {e.adapter}")

    def on_finished(self, code: int, crashed: bool) -> None:
        self._set_running(False)
        if not (self.engine.saw_done and code == 0):
            self.engine_state.emit(f"Training engine: stopped with an error (exit code {code})")
        error = self.engine.last_error
        if self.engine.saw_done and code == 0:
            self.run_finished.emit(True)
            return
        lines = [f"The training engine stopped (exit code {code})."]
        if error is not None:
            lines.append(event_text(error))
        elif crashed:
            lines.append("It ended without a message: it was killed or crashed (out of memory?).")
        tail = "\n".join(list(self.engine.stderr_tail)[-8:])
        if tail:
            lines.append("Last lines of its log:\n" + tail)
        self.status.setText("\n".join(lines))
        has_state = self.run_dir is not None and (self.run_dir / "state").is_dir()
        self.resume_button.setVisible(has_state)
        self.run_finished.emit(False)


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "—"
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds >= 60 else f"{seconds:.0f}s"
