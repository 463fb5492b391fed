"""Wizard pages 4-7: captions (trigger word and pruning, previewed before they are written), the settings
chosen and why, sample prompts, and the summary."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWizardPage,
)

from app.engine_client import EngineCall
from app.theme import ERROR, WARNING
from app.widgets.prompt_table import PromptTable
from app.wizard.plan import default_prompts, format_duration, make_plan
from app.wizard.state import WizardState
from trainer.shared import config as config_mod

TRIGGER_RULE = re.compile(r"^[^,\n]{2,40}$")
PREVIEW_ROWS = 50


def _table(headers: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().hide()
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    table.setWordWrap(True)
    return table


def _fill(table: QTableWidget, rows: list[tuple]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.setItem(r, c, QTableWidgetItem(str(value)))
    table.resizeRowsToContents()


class CaptionsPage(QWizardPage):
    def __init__(self, state: WizardState):
        super().__init__()
        self.state = state
        self.setTitle("Trigger word and captions")
        self.trigger = QLineEdit()
        self.trigger.setPlaceholderText("a rare made-up word, e.g. zkx")
        self.class_word = QLineEdit()
        self.class_word.setPlaceholderText("what it is: woman, dog, robot, mug")
        self.class_label = QLabel("Class word:")
        self.tags = QListWidget()
        self.tags.setMaximumHeight(110)
        self.tags.setFlow(QListWidget.Flow.LeftToRight)   # tags flow in rows: many fit at a glance
        self.tags.setWrapping(True)
        self.tags.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.tags.setSpacing(2)
        self.tags.itemChanged.connect(lambda _i: self._schedule())
        self.preview = _table(["Image", "Caption now", "Caption after"])
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.timer = QTimer(self, singleShot=True, interval=300)
        self.timer.timeout.connect(self._preview)
        for edit in (self.trigger, self.class_word):
            edit.textChanged.connect(self._schedule)
        row = QHBoxLayout()
        row.addWidget(QLabel("Trigger word:"))
        row.addWidget(self.trigger, 1)
        row.addWidget(self.class_label)
        row.addWidget(self.class_word, 1)
        self.tags_label = QLabel("")
        self.tags_label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.tags_label)
        layout.addWidget(self.tags)
        layout.addWidget(self.preview, 1)
        layout.addWidget(self.status)
        self._suggested: list[str] | None = None
        self._waiting_to_apply = False

    def initializePage(self) -> None:
        character = self.state.kind == "character"
        self.class_label.setVisible(character)
        self.class_word.setVisible(character)
        self.setSubTitle(
            "The trigger word goes first in every caption. Tags for what is always true of your subject (hair "
            "colour, markings, logo) are removed, so the LoRA ties them to the trigger word; what changes "
            "between pictures stays." if character else
            "Captions should describe what is in each picture; the style itself is left to the LoRA, so tags "
            "that name it are removed. The trigger word goes first.")
        self.tags_label.setText("Tags to remove (checked), suggested from your captions:")
        self._suggested = None
        self._preview()

    def _schedule(self) -> None:
        self.completeChanged.emit()
        self.timer.start()

    def pruned(self) -> list[str]:
        return [self.tags.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.tags.count())
                if self.tags.item(i).checkState() == Qt.CheckState.Checked]

    def _args(self, apply: bool) -> list[str]:
        args = ["dataset", "prepare-captions", str(self.state.project.dataset), "--kind", self.state.kind,
                "--trigger", self.trigger.text().strip(), "--json"]
        if self.state.kind == "character" and self.class_word.text().strip():
            args += ["--class-word", self.class_word.text().strip()]
        if self._suggested is not None:  # before the first answer, the engine suggests what to prune
            args += [a for tag in self.pruned() for a in ("--prune", tag)]
        return args + (["--apply"] if apply else [])

    def _preview(self) -> None:
        call = EngineCall(self._args(apply=False), self)
        call.done.connect(self._previewed)

    def _previewed(self, answer: dict | None, error: str) -> None:
        if answer is None:
            self.status.setText(f"<span style='color:{ERROR}'>{error}</span>")
            return
        if self._suggested is None:
            self._suggested = answer["suggested_prune"]
            self._fill_tags(answer["suggested_prune"])
        rows = [(Path(c["image"]).name, c["before"], c["problem"] or c["after"])
                for c in answer["changes"][:PREVIEW_ROWS]]
        _fill(self.preview, rows)
        problems = sum(1 for c in answer["changes"] if c["problem"])
        self.status.setText(f"{problems} caption file(s) are not UTF-8 and are left as they are." if problems else "")

    def _fill_tags(self, suggested: list[str]) -> None:
        frequency = (self.state.health or {}).get("tag_frequency", {})
        self.tags.blockSignals(True)
        self.tags.clear()
        names = list(dict.fromkeys(suggested + [t.lower() for t in frequency]))
        for tag in names[:60]:
            count = sum(n for t, n in frequency.items() if t.lower() == tag)
            item = QListWidgetItem(f"{tag}  ({count})")
            item.setData(Qt.ItemDataRole.UserRole, tag)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if tag in suggested else Qt.CheckState.Unchecked)
            self.tags.addItem(item)
        self.tags.blockSignals(False)

    def isComplete(self) -> bool:
        return bool(TRIGGER_RULE.match(self.trigger.text().strip())) and not self._waiting_to_apply

    def validatePage(self) -> bool:
        key = (self.trigger.text().strip(), self.class_word.text().strip(), tuple(self.pruned()))
        if self.state.captions_applied == key:
            return True
        self._waiting_to_apply = True
        self.completeChanged.emit()
        self.status.setText("Writing the captions…")
        call = EngineCall(self._args(apply=True), self)
        call.done.connect(lambda answer, error: self._applied(key, answer, error))
        return False

    def _applied(self, key: tuple, answer: dict | None, error: str) -> None:
        self._waiting_to_apply = False
        self.completeChanged.emit()
        if answer is None:
            self.status.setText(f"<span style='color:{ERROR}'>Captions not written: {error}</span>")
            return
        self.state.trigger, self.state.class_word, pruned = key
        self.state.prune = list(pruned)
        self.state.captions_applied = key
        self.status.setText(f"{answer['written']} captions written.")
        self.wizard().next()


class SettingsPage(QWizardPage):
    expert = Signal()

    def __init__(self, state: WizardState):
        super().__init__()
        self.state = state
        self.setTitle("Settings chosen for you")
        self.setSubTitle("From the recipe, your images and your GPU. Each line says why.")
        self.table = _table(["Setting", "Value", "Why"])
        self.warnings = QLabel("")
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet(f"color: {WARNING};")
        self.memory = QLabel("")  # the engine's `plan` for exactly these settings
        self.memory.setWordWrap(True)
        button = QPushButton("Expert: open all settings…")
        button.clicked.connect(self.expert)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.memory)
        layout.addWidget(self.warnings)
        layout.addLayout(row)

    def initializePage(self) -> None:
        s = self.state
        s.plan = make_plan(s.kind, s.family, s.model_path, s.project.dataset, s.images, s.system,
                           s.trigger, s.prompts or None, class_word=s.class_word, name=s.name)
        _fill(self.table, [(c.key, _show(c.value), c.why) for c in s.plan.choices])
        self.warnings.setText("\n".join(f"⚠ {w}" for w in s.plan.warnings))
        self._ask_memory()

    def _ask_memory(self) -> None:
        path = Path(tempfile.gettempdir()) / f"lora-studio-wizard-plan-{os.getpid()}.toml"
        config_mod.save(self.state.plan.config, path)
        self.memory.setText("Memory: predicting…")
        self.plan_call = EngineCall(["plan", str(path), "--json"], self)
        self.plan_call.done.connect(self._memory_planned)

    def _memory_planned(self, answer: dict | None, error: str) -> None:
        if answer is None:
            self.memory.setText(f"Memory: could not predict ({error})")
            return
        self.memory.setText(f"Memory: {answer['summary']}, predicted for these settings")
        if answer["warnings"]:
            self.warnings.setText("\n".join(f"⚠ {w}" for w in self.state.plan.warnings + answer["warnings"]))


def _show(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


class PromptsPage(QWizardPage):
    def __init__(self, state: WizardState):
        super().__init__()
        self.state = state
        self.setTitle("Sample prompts")
        self.setSubTitle("During training, these prompts are drawn with the same seed every few hundred steps, "
                         "so you can watch the LoRA learn. One prompt per row; a row may have its own negative "
                         "prompt, size, steps, CFG or seed (empty cells take the defaults).")
        self.prompts = PromptTable()
        self.prompts.changed.connect(self.completeChanged)
        QVBoxLayout(self).addWidget(self.prompts)

    def initializePage(self) -> None:
        s = self.state
        self.prompts.set_prompts(default_prompts(s.kind, s.trigger, s.class_word))

    def lines(self) -> list[str]:
        return self.prompts.prompts()

    def isComplete(self) -> bool:
        return bool(self.lines())

    def validatePage(self) -> bool:
        self.state.prompts = self.lines()
        self.state.plan.config.sampling.prompts = self.state.prompts
        return True


class SummaryPage(QWizardPage):
    def __init__(self, state: WizardState):
        super().__init__()
        self.state = state
        self.setTitle("Ready to train")
        self.text = QLabel("")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        QVBoxLayout(self).addWidget(self.text, 1)

    def initializePage(self) -> None:
        s, plan = self.state, self.state.plan
        cfg = plan.config
        self.setSubTitle(f"Estimated duration: {format_duration(plan.seconds)} "
                         "(rough; the run page shows the measured time left after a few steps).")
        rows = [("Project", str(s.project.folder)), ("Training", f"a {s.kind} LoRA, trigger word “{s.trigger}”"),
                ("Base model", s.model_text or s.model_path), ("Images", f"{s.images}"),
                ("Steps", f"{plan.steps} ({cfg.schedule.batch_size} image(s) per step)"),
                ("Memory settings", plan.tier), ("Previews", f"every {cfg.sampling.every_n_steps} steps, "
                                                 f"{len(cfg.sampling.prompts)} prompts"),
                ("Adapter", f"{cfg.saving.output_name}.safetensors in the run folder; export it to your UI "
                            "from the run page")]
        self.text.setText("<table cellpadding=4>" + "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>"
                                                             for k, v in rows) + "</table>")
