"""The Test page: generate with the LoRA in the app, off vs on, X/Y grids, merge and combine.

It talks to one long-lived engine (`lora-studio serve`, through EngineProcess): the base loads once, and
each Generate / grid cell is a request whose images stream back as `image` events, so the window never
blocks. The engine starts on the first request and stays up for the next ones.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.closing import Job, engine_job
from app.dialogs.export_dialog import add_adapter_items
from app.dialogs.image_viewer import ImageViewer
from app.engine_client import EngineProcess
from app.engine_events import dispatch, event_text
from app.test_form import SettingsForm
from app.widgets.lora_list import LoraList
from app.widgets.results import ResultsGrid
from app.xy_grid import compose_grid, parse_strengths, plan_cells
from trainer.shared.run_folder import is_ema_file

STOP_GRACE_MS = 10_000   # the engine finishes the image it is drawing, then exits; nothing of it needs saving


class TestPage(QWidget):
    __test__ = False                # not a pytest test class, despite the name
    jobs_finished = Signal()        # every request sent so far is answered (tests and scripts wait on it)

    def __init__(self, engine: EngineProcess | None = None, out_root: Path | None = None, parent=None):
        super().__init__(parent)
        self.engine = engine or EngineProcess(self)
        self.out_root = Path(out_root or Path.home() / "LoRA Studio tests")
        self.run_dir: Path | None = None
        self.pending: dict[str, tuple[int, int]] = {}     # job id -> (row, first column) in the results
        self.grid: dict | None = None                      # the X/Y grid being filled
        self.last_grid: Path | None = None
        self._counter = 0
        self._build()
        self.setAcceptDrops(True)
        self.engine.event.connect(self.on_event)
        self.engine.finished.connect(self.on_engine_finished)
        self._set_busy(False)

    def _build(self) -> None:
        self.model = QLineEdit("demo:sd15")
        self.model.setToolTip("base model: demo:sd15, a diffusers folder or a .safetensors checkpoint")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(browse)
        lora_buttons = self._lora_controls()
        self.settings_form = SettingsForm()
        self.generate_button = QPushButton("Generate")
        self.compare_button = QPushButton("Off vs on")
        self.compare_button.setToolTip("the same seed without and with the LoRAs, side by side")
        self.cancel_button = QPushButton("Cancel")
        self.generate_button.clicked.connect(self.generate)
        self.compare_button.clicked.connect(self.off_vs_on)
        self.cancel_button.clicked.connect(self.cancel)
        self.xy_mode = QComboBox()
        self.xy_mode.addItem("checkpoints × strengths", "checkpoints")
        self.xy_mode.addItem("prompts × strengths", "prompts")
        self.xy_strengths = QLineEdit("0, 0.5, 0.75, 1")
        self.xy_prompts = QPlainTextEdit()
        self.xy_prompts.setPlaceholderText("prompts × strengths: one prompt per line")
        self.xy_prompts.setMaximumHeight(60)
        self.xy_button = QPushButton("X/Y grid")
        self.xy_button.clicked.connect(self.xy_grid)
        self.merge_button = QPushButton("Merge into checkpoint…")
        self.combine_button = QPushButton("Combine LoRAs…")
        self.merge_button.clicked.connect(lambda: self.open_merge("bake"))
        self.combine_button.clicked.connect(lambda: self.open_merge("combine"))
        self.progress = QProgressBar()
        self.status = QLabel("Choose a base model and LoRAs, then Generate.")
        self.status.setWordWrap(True)
        self.results = ResultsGrid()
        self.results.image_activated.connect(lambda path: ImageViewer([path], self).exec())
        self._lay_out(model_row, lora_buttons)

    def _lora_controls(self) -> QHBoxLayout:
        self.loras = LoraList()
        self.run_adapters = QComboBox()
        self.run_adapters.setToolTip("the run's final adapter and its checkpoints (and their EMA versions)")
        add_run = QPushButton("Add")
        add_run.clicked.connect(lambda: self.run_adapters.currentData() and
                                self.loras.add(Path(self.run_adapters.currentData())))
        add_all = QPushButton("Add all checkpoints")
        add_all.clicked.connect(self.add_all_checkpoints)
        add_file = QPushButton("Add LoRA file…")
        add_file.clicked.connect(self._browse_lora)
        self.advanced = QCheckBox("Advanced: separate text-encoder strength")
        self.advanced.toggled.connect(self.loras.set_advanced)
        buttons = QHBoxLayout()
        for w in (self.run_adapters, add_run, add_all, add_file):
            buttons.addWidget(w)
        return buttons

    def _lay_out(self, model_row, lora_buttons) -> None:
        left = QWidget()
        outer = QVBoxLayout(left)
        form = QFormLayout()
        outer.addLayout(form)
        outer.addStretch(1)   # extra height goes below the controls, not between them
        form.addRow("Base model", model_row)
        form.addRow("LoRAs", lora_buttons)
        form.addRow(self.loras)
        form.addRow(self.advanced)
        form.addRow(self.settings_form)
        buttons = QHBoxLayout()
        for b in (self.generate_button, self.compare_button, self.cancel_button):
            buttons.addWidget(b)
        form.addRow(buttons)
        xy = QHBoxLayout()
        xy.addWidget(self.xy_mode)
        xy.addWidget(self.xy_strengths, 1)
        xy.addWidget(self.xy_button)
        form.addRow("X/Y grid", xy)
        form.addRow(self.xy_prompts)
        tools = QHBoxLayout()
        tools.addWidget(self.merge_button)
        tools.addWidget(self.combine_button)
        form.addRow(tools)
        right = QWidget()
        column = QVBoxLayout(right)
        column.addWidget(self.progress)
        column.addWidget(self.status)
        column.addWidget(self.results, 1)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setSizes([430, 720])
        QVBoxLayout(self).addWidget(split)

    # --- what the user (or the Run page) sets up -------------------------------------------------------

    def set_run(self, run_dir: Path) -> None:
        """Fill in the run's base model, prompt and adapters; results go to RUN_DIR/tests."""
        from trainer.shared import config as config_mod

        self.run_dir = Path(run_dir)
        config_path = self.run_dir / "config.toml"
        if config_path.exists():
            cfg = config_mod.load(config_path)
            self.model.setText(cfg.model.path)
            if cfg.sampling.prompts:
                self.settings_form.prompt.setPlainText(cfg.sampling.prompts[0])
        self.run_adapters.clear()
        add_adapter_items(self.run_adapters, self.run_dir)

    def test_adapter(self, adapter: Path, run_dir: Path | None = None) -> None:
        """"Test this checkpoint": the page pre-filled with the run and only this LoRA, at strength 1."""
        if run_dir is not None:
            self.set_run(run_dir)
        self.loras.clear()
        self.loras.add(Path(adapter), 1.0)
        self.status.setText(f"Testing {Path(adapter).name}: press Generate, Off vs on, or X/Y grid.")

    def add_all_checkpoints(self) -> None:
        for i in range(self.run_adapters.count()):
            if not is_ema_file(self.run_adapters.itemData(i)):  # an EMA version is added on its own, by choice
                self.loras.add(Path(self.run_adapters.itemData(i)))

    def out_dir(self) -> Path:
        return self.run_dir / "tests" if self.run_dir else self.out_root

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Base model", "", "Checkpoints (*.safetensors *.ckpt)")
        if path:
            self.model.setText(path)

    def _browse_lora(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "LoRA files", str(self.run_dir or ""),
                                                "LoRA (*.safetensors)")
        for path in paths:
            self.loras.add(Path(path))

    def dragEnterEvent(self, event) -> None:
        if any(u.toLocalFile().endswith(".safetensors") for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        for url in event.mimeData().urls():
            if url.toLocalFile().endswith(".safetensors"):
                self.loras.add(Path(url.toLocalFile()))
        event.acceptProposedAction()

    # --- requests ----------------------------------------------------------------------------------------

    def _job(self, kind: str) -> str:
        self._counter += 1
        return f"{kind}-{self._counter}"

    def send(self, payload: dict, place: tuple[int, int] | None = None) -> None:
        if not self.engine.running:
            self.engine.serve()
        self.pending[payload["id"]] = place or (-1, 0)
        self.engine.request(payload)
        self._set_busy(True)

    def _request(self, job: str, loras: list[dict], prompt: str | None = None, seed: int | None = None,
                 name: str = "") -> dict:
        settings = self.settings_form.values()
        if prompt is not None:
            settings["prompt"] = prompt
        if seed is not None:
            settings["seed"] = seed
        return {"cmd": "generate", "id": job, "model": self.model.text().strip(), "loras": loras,
                "out": str(self.out_dir()), "name": name, **settings}

    def generate(self) -> None:
        job = self._job("gen")
        request = self._request(job, self.loras.requests())
        row = self.results.add_row(f"#{self._counter}", request["count"])
        self.send(request, (row, 0))

    def off_vs_on(self) -> None:
        loras = self.loras.requests()
        if not loras:
            self.status.setText("Add a LoRA first: Off vs on compares the base with the LoRAs at the same seed.")
            return
        seed = self._fixed_seed()
        row = self.results.add_row(f"off | on, seed {seed}", 2)
        self.send(dict(self._request(self._job("off"), [], seed=seed), count=1), (row, 0))
        self.send(dict(self._request(self._job("on"), loras, seed=seed), count=1), (row, 1))

    def xy_grid(self) -> None:
        try:
            strengths = parse_strengths(self.xy_strengths.text())
            rows, columns, cells = plan_cells(self.xy_mode.currentData(), strengths, self.loras.requests(),
                                              self.xy_prompts.toPlainText().splitlines(),
                                              self.settings_form.values()["prompt"])
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        seed, stamp = self._fixed_seed(), time.strftime("%Y%m%d-%H%M%S")
        self.results.set_axes(rows, columns)
        self.grid = {"rows": rows, "columns": columns, "cells": {}, "expected": len(cells),
                     "out": self.out_dir() / f"xy-{stamp}.png", "jobs": set()}
        for r, c, prompt, loras in cells:
            job = self._job("xy")
            self.grid["jobs"].add(job)
            self.send(dict(self._request(job, loras, prompt, seed, name=f"xy-{stamp}-r{r}c{c}"), count=1), (r, c))
        self.status.setText(f"X/Y grid: {len(cells)} images at seed {seed}…")

    def _fixed_seed(self) -> int:
        seed = self.settings_form.values()["seed"]
        return seed if seed >= 0 else random.randrange(2**32)

    def cancel(self) -> None:
        self.engine.request({"cmd": "cancel"})
        self.status.setText("Cancelling…")

    def open_merge(self, mode: str) -> None:
        from app.dialogs.merge_dialog import MergeDialog

        dialog = MergeDialog(mode, self.loras.requests(), self.model.text().strip(), self.out_dir(), self)
        if dialog.exec():
            self.send(dialog.payload(self._job(mode)))
            self.status.setText("Merging in the engine…" if mode == "bake" else "Combining in the engine…")

    # --- events ------------------------------------------------------------------------------------------

    def on_event(self, event) -> None:
        dispatch(self, event)

    def _on_ready(self, e) -> None:
        self.status.setText(f"Base model loaded: {e.model} ({e.arch}) on {e.device}.")

    def _on_progress(self, e) -> None:
        self.progress.setMaximum(max(e.total, 1))
        self.progress.setValue(e.step)

    def _on_image(self, e) -> None:
        row, column = self.pending.get(e.job, (-1, 0))
        if row < 0:
            row = self.results.add_row(e.job)
        self.results.put(row, column + e.index, e.path, e.caption)
        if self.grid is not None and e.job in self.grid["jobs"]:
            self.grid["cells"][(row, column)] = e.path

    def _on_job_done(self, e) -> None:
        self.pending.pop(e.job, None)
        if e.result.get("summary"):
            self.status.setText(e.result["summary"])
        if self.grid is not None and e.job in self.grid["jobs"]:
            self.grid["jobs"].discard(e.job)
            if not self.grid["jobs"]:
                self._finish_grid()
        self._maybe_idle()

    def _on_error(self, e) -> None:
        self.pending.pop(e.job, None)
        if self.grid is not None:
            self.grid["jobs"].discard(e.job)
        self.status.setText(event_text(e))
        self._maybe_idle()

    def _finish_grid(self) -> None:
        grid, self.grid = self.grid, None
        if len(grid["cells"]) < grid["expected"]:
            self.status.setText(f"X/Y grid stopped: {len(grid['cells'])} of {grid['expected']} images.")
            return
        path = compose_grid(grid["cells"], grid["rows"], grid["columns"], grid["out"])
        self.last_grid = path
        self.status.setText(f"X/Y grid saved: {path} (single images beside it)")

    def _maybe_idle(self) -> None:
        if not self.pending:
            self._set_busy(False)
            self.jobs_finished.emit()

    def on_engine_finished(self, code: int, crashed: bool) -> None:
        waiting = bool(self.pending)
        if waiting or crashed:
            error = self.engine.last_error
            tail = "\n".join(list(self.engine.stderr_tail)[-4:])
            self.status.setText(f"The engine stopped (exit code {code}). "
                                + (event_text(error) if error else "") + (f"\n{tail}" if tail else ""))
        self.pending.clear()
        self.grid = None
        self._set_busy(False)
        if waiting:  # those requests will never be answered now
            self.jobs_finished.emit()

    def _set_busy(self, busy: bool) -> None:
        self.cancel_button.setEnabled(busy)
        if not busy:
            self.progress.setValue(0)

    def shutdown(self) -> None:
        """Ask the engine to finish its current request and exit; returns at once."""
        if self.engine.running:
            self.engine.request({"cmd": "stop"})
            self.engine.close_input()

    def closing_jobs(self) -> list[Job]:
        """The window is closing: the engine ends after its current image, or is ended by force."""
        return [engine_job("Stopping the test engine… (finishing the image it is drawing)", self.engine,
                           self.shutdown, STOP_GRACE_MS)]
