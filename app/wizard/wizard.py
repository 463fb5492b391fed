"""The New LoRA wizard: seven pages from "what are you training" to a started run.

Each page decides one thing into the shared WizardState; the plan (app.wizard.plan) turns the decisions
into a TrainConfig. Finishing writes the project's config.toml and asks the main window to start the run;
"Expert" writes it and opens the full training page instead.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWizard

from app.system_probe import SystemProbe, system_probe
from app.wizard.plan import SystemInfo
from app.wizard.setup_pages import ImagesPage, KindPage, ModelPage
from app.wizard.state import WizardState
from app.wizard.train_pages import CaptionsPage, PromptsPage, SettingsPage, SummaryPage
from trainer.shared import config as config_mod


class NewLoraWizard(QWizard):
    start_training = Signal(Path)   # the project folder, its config.toml written
    open_expert = Signal(Path)      # the same, but the user wants the full training page

    def __init__(self, projects_dir: Path, system: SystemInfo | None = None, parent=None,
                 probe: SystemProbe | None = None):
        super().__init__(parent)
        self.setWindowTitle("New LoRA")
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage)
        self.setButtonText(QWizard.WizardButton.FinishButton, "Start training")
        self.resize(900, 640)
        self.state = WizardState(Path(projects_dir))
        self.kind_page, self.model_page = KindPage(self.state), ModelPage(self.state)
        self.images_page, self.captions_page = ImagesPage(self.state), CaptionsPage(self.state)
        self.settings_page, self.prompts_page = SettingsPage(self.state), PromptsPage(self.state)
        self.summary_page = SummaryPage(self.state)
        for page in (self.kind_page, self.model_page, self.images_page, self.captions_page,
                     self.settings_page, self.prompts_page, self.summary_page):
            self.addPage(page)
        self.settings_page.expert.connect(self._expert)
        if system is not None:
            self.set_system(system)
        else:  # the app's one probe: asked once, already answered when the start page showed it
            (probe or system_probe()).when_ready(self._system_answered)

    def _system_answered(self, report: dict, error: str) -> None:
        self.set_system(SystemInfo.from_report(report) if report else SystemInfo(), error)

    def set_system(self, system: SystemInfo, error: str = "") -> None:
        self.state.system = system
        self.model_page.show_system()
        if error:
            self.model_page.gpu.setText(f"Could not ask the engine about the GPU ({error}); assuming none.")

    def write_config(self) -> Path:
        project = self.state.project
        config_mod.save(self.state.plan.config, project.config_path)
        return project.folder

    def accept(self) -> None:
        folder = self.write_config()
        super().accept()
        self.start_training.emit(folder)

    def _expert(self) -> None:
        folder = self.write_config()
        super().accept()
        self.open_expert.emit(folder)
