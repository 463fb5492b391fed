"""The main window: a start page (try the demo, open a past run) and the live run page."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QStandardPaths, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStyle,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app import settings
from app.closing import ClosingDialog
from app.dataset_page import DatasetPage
from app.engine_client import EngineProcess
from app.project import Project, ProjectError
from app.project_lock import ProjectLocked, lock_project
from app.run_page import RunPage
from app.system_probe import SystemProbe, system_probe
from app.test_page import TestPage
from app.training_page import TrainingPage
from app.widgets.system_facts import SystemFacts, facts_html
from app.wizard.wizard import NewLoraWizard

SPACING = 12   # between the start page's blocks (Qt's default 6 crowds the big buttons)
DEMO_TEXT = ("The demo trains a tiny built-in model with random weights on a few bundled images, so you can "
             "see the whole flow (live previews, loss, checkpoints, the adapter file) in under a minute on "
             "any computer. Its preview images are noise because the model is random.")


class MainWindow(QMainWindow):
    closed = Signal()   # really closed, every job ended: the project is free for another window

    def __init__(self, engine: EngineProcess | None = None, data_dir: Path | None = None,
                 probe: SystemProbe | None = None):
        super().__init__()
        self.probe = probe or system_probe()
        self.setWindowTitle("LoRA Studio")
        self.data_dir = Path(data_dir or QStandardPaths.writableLocation(
            QStandardPaths.StandardLocation.AppDataLocation) or Path.home() / ".lora-studio")
        self.project: Project | None = None
        self.project_lock = None
        self.closing: ClosingDialog | None = None   # while jobs stop before the window closes
        self.run_page = RunPage(engine)
        self.dataset_page = DatasetPage()
        self.training_page = TrainingPage(self.data_dir / "presets")
        self.training_page.saved.connect(lambda _path: self.prepare_project_run())
        self.dataset_page.dataset_changed.connect(self.training_page.dataset_changed)
        self.training_page.model_checked.connect(self._model_checked)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._start_page(), "Start")
        self.tabs.addTab(self.dataset_page, "Dataset")
        self.tabs.addTab(self.training_page, "Training")
        self.tabs.addTab(self.run_page, "Run")
        self.test_page = TestPage(out_root=self.data_dir / "tests")
        self.tabs.addTab(self.test_page, "Test")
        self.run_page.test_requested.connect(self.test_adapter)
        self.setAcceptDrops(True)
        self.run_page.run_finished.connect(
            lambda _ok: self.project and self.prepare_project_run(keep_status=True))
        self.setCentralWidget(self.tabs)
        self._menus()
        self._status_bar()
        self.resize(1180, 760)
        geometry = settings.raw(settings.GEOMETRY)
        if geometry is not None:
            self.restoreGeometry(geometry)

    def _start_page(self) -> QWidget:
        page = QWidget()
        outer = QHBoxLayout(page)
        column = QWidget()
        column.setMaximumWidth(640)
        outer.addStretch(1)
        outer.addWidget(column)
        outer.addStretch(1)
        layout = QVBoxLayout(column)
        layout.addSpacing(40)
        title = QLabel("<h1>LoRA Studio</h1><p>Train a LoRA on your own images, watch it learn, and use it "
                       "in AUTOMATIC1111, Forge, ComfyUI, InvokeAI or diffusers.</p>")
        icon, pix = self.style().standardIcon, QStyle.StandardPixmap
        demo = QPushButton(icon(pix.SP_MediaPlay), "Try the demo")
        demo.clicked.connect(self.try_demo)
        note = QLabel(DEMO_TEXT)
        note.setWordWrap(True)
        open_run = QPushButton(icon(pix.SP_DirIcon), "Open a past run…")
        open_run.clicked.connect(self.open_run)
        new_project = QPushButton(icon(pix.SP_FileIcon), "New LoRA…  (a guided set-up: images, captions, settings)")
        new_project.setToolTip("Ctrl+N")
        new_project.clicked.connect(lambda: self.new_lora())
        open_project = QPushButton(icon(pix.SP_DirOpenIcon), "Open project…")
        open_project.setToolTip("Ctrl+O")
        open_project.clicked.connect(self.choose_project)
        for button in (demo, open_run, new_project, open_project):
            button.setMinimumHeight(44)
        title.setWordWrap(True)
        self.facts = SystemFacts(self.probe, column)
        layout.setSpacing(SPACING)
        for widget in (title, new_project, open_project, demo, note, open_run, self.facts):
            layout.addWidget(widget)
        layout.addStretch(1)
        return page

    def _menus(self) -> None:
        icon, pix = self.style().standardIcon, QStyle.StandardPixmap
        file_menu = self.menuBar().addMenu("&File")
        for text, slot, key, glyph in (
                ("&New LoRA…", lambda: self.new_lora(), QKeySequence.StandardKey.New, pix.SP_FileIcon),
                ("New &empty project…", self.new_project, None, pix.SP_FileDialogNewFolder),
                ("&Open project…", self.choose_project, QKeySequence.StandardKey.Open, pix.SP_DirOpenIcon),
                ("Try the &demo", self.try_demo, None, pix.SP_MediaPlay),
                ("Open &run folder…", self.open_run, "Ctrl+Shift+O", pix.SP_DirIcon),
                ("&Quit", self.close, QKeySequence.StandardKey.Quit, pix.SP_DialogCloseButton)):
            action = QAction(icon(glyph), text, self)
            action.triggered.connect(slot)
            if key is not None:
                action.setShortcut(key)
            file_menu.addAction(action)
        self.recent_menu = file_menu.addMenu("&Recent projects")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        run_menu = self.menuBar().addMenu("&Training")
        start = run_menu.addAction(icon(pix.SP_MediaPlay), "&Start training", self.start_training)
        start.setShortcuts([QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
        stop = run_menu.addAction(icon(pix.SP_MediaStop), "S&top training…", self.confirm_stop)
        stop.setShortcut(QKeySequence(Qt.Key.Key_Escape))
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(icon(pix.SP_ComputerIcon), "This &computer…", self.show_system_facts)

    def _status_bar(self) -> None:
        """What the engines are doing, always in view (the Run page may be hidden behind another tab)."""
        self.engine_state = QLabel("Training engine: idle")
        self.statusBar().addPermanentWidget(self.engine_state)
        self.run_page.engine_state.connect(self.engine_state.setText)

    def start_training(self) -> None:
        """Ctrl+Return: start the prepared run (the project's, or the demo when none is open)."""
        if self.run_page.running:
            return
        if self.project is None and self.run_page.run_dir is None:
            self.try_demo()
            return
        self.tabs.setCurrentWidget(self.run_page)
        self.run_page.start()

    def confirm_stop(self) -> bool:
        """Esc: stop the run after asking (a stop saves a checkpoint first, and the run can be resumed)."""
        if not self.run_page.running:
            return False
        answer = QMessageBox.question(self, "Stop training?", "Stop the run now? It saves a checkpoint first, "
                                      "and you can resume it later from the Run page.")
        if answer != QMessageBox.StandardButton.Yes:
            return False
        self.run_page.stop()
        self.statusBar().showMessage("Stopping: saving a checkpoint first…", 10_000)
        return True

    def showEvent(self, event) -> None:
        super().showEvent(event)
        # the probe's child imports torch (seconds): ask once the window is on screen, not before
        QTimer.singleShot(0, self.probe.start)

    def _model_checked(self, info: dict) -> None:
        """The base model's family (from the engine) sets what the caption editor counts tokens against."""
        if info.get("ok"):
            limit = self.training_page.editors["dataset.max_token_length"].value()
            self.dataset_page.editor.set_family(info["family"], limit)

    def show_system_facts(self) -> None:
        report = self.facts.report
        QMessageBox.information(self, "This computer", facts_html(report) if report is not None else
                                "Still asking the engine; try again in a moment.")

    def restore_last_project(self) -> None:
        last = settings.text(settings.LAST_PROJECT)
        if last and (Path(last) / "project.toml").exists():
            self.open_project(Path(last))

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for folder in settings.recent(settings.RECENT_PROJECTS):
            self.recent_menu.addAction(folder, lambda f=folder: self.open_project(Path(f)))

    def new_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the new project (empty or new)")
        if folder:
            self.open_project(Path(folder), create=True)

    def projects_dir(self) -> Path:
        saved = settings.text(settings.PROJECTS_DIR)
        documents = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
        return Path(saved or (Path(documents) / "LoRA Studio" if documents else self.data_dir / "projects"))

    def new_lora(self, system=None) -> NewLoraWizard:
        self.wizard = NewLoraWizard(self.projects_dir(), system, self, self.probe)
        self.wizard.start_training.connect(self.start_project_run)
        self.wizard.open_expert.connect(self._open_expert)
        self.wizard.finished.connect(
            lambda _r: settings.put(settings.PROJECTS_DIR, str(self.wizard.state.projects_dir)))
        self.wizard.show()
        return self.wizard

    def start_project_run(self, folder: Path) -> None:
        self.open_project(folder)
        if self.run_page.running:
            QMessageBox.information(self, "A run is going", "Another run is still training; start this one "
                                    "from the Run page when it has finished.")
            return
        self.tabs.setCurrentWidget(self.run_page)
        self.run_page.start()

    def _open_expert(self, folder: Path) -> None:
        self.open_project(folder)
        self.tabs.setCurrentWidget(self.training_page)

    def choose_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a LoRA Studio project")
        if folder:
            self.open_project(Path(folder))

    def open_project(self, folder: Path, create: bool = False) -> None:
        same = self.project is not None and Path(self.project.folder).resolve() == Path(folder).resolve()
        try:
            project = Project.create(folder) if create else Project.open(folder)
            lock = self.project_lock if same else lock_project(project.folder)
        except (ProjectError, ProjectLocked) as exc:
            self.message = QMessageBox(QMessageBox.Icon.Warning, "Cannot open project", str(exc),
                                       QMessageBox.StandardButton.Ok, self)
            self.message.open()  # not exec(): the window stays responsive (and testable)
            return
        if not same and self.project_lock is not None:
            self.project_lock.unlock()
        self.project, self.project_lock = project, lock
        settings.remember(settings.RECENT_PROJECTS, str(folder))
        settings.put(settings.LAST_PROJECT, str(folder))
        self.setWindowTitle(f"LoRA Studio — {self.project.name}")
        self.dataset_page.set_folder(self.project.dataset)
        self.training_page.open_project(self.project.dataset, self.project.config_path)
        self.prepare_project_run()
        self.tabs.setCurrentWidget(self.dataset_page)

    def prepare_project_run(self, keep_status: bool = False) -> None:
        """The project's config when it has one; until then the demo settings on the project's images."""
        base = self.project.runs_dir / time.strftime("run-%Y%m%d-%H%M%S")
        run_dir, n = base, 1
        while run_dir.exists():  # a run that ended within the same second already took the name
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")
        if self.project.config_path.exists():
            self.run_page.prepare(run_dir, self.project.config_path, keep_status=keep_status)
        else:
            self.run_page.prepare(run_dir, demo=True, overrides=[f"dataset.path={self.project.dataset}"],
                                  keep_status=keep_status)

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and self.project is not None:
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if paths and self.project is not None:
            self.tabs.setCurrentWidget(self.dataset_page)
            self.dataset_page.import_paths(paths)
            event.acceptProposedAction()

    def try_demo(self) -> None:
        if self.run_page.running:
            return
        run_dir = self.data_dir / "demo-runs" / time.strftime("demo-%Y%m%d-%H%M%S")
        self.run_page.prepare(run_dir, demo=True)
        self.tabs.setCurrentWidget(self.run_page)
        self.run_page.start()

    def open_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a run folder", str(self.data_dir))
        if folder:
            self.show_run(Path(folder))

    def show_run(self, folder: Path) -> None:
        self.run_page.show_past_run(folder)
        self.tabs.setCurrentWidget(self.run_page)

    def test_adapter(self, adapter: str) -> None:
        """"Test this checkpoint" on the Run page: the Test page, pre-filled with that run and adapter."""
        self.test_page.test_adapter(Path(adapter), self.run_page.run_dir)
        self.tabs.setCurrentWidget(self.test_page)

    def closeEvent(self, event) -> None:
        """Running jobs are asked to stop and the window closes once they have ended, the event loop running
        meanwhile (app.closing says what it waits for); with nothing running it closes at once."""
        if self.closing is None:
            if self.run_page.running and not self._stop_run_to_close():
                event.ignore()
                return
            self.closing = ClosingDialog(self._closing_jobs(), self)
            if not self.closing.start():
                self.closing.all_ended.connect(self.close)
                self._wait_for_jobs()
                event.ignore()
                return
        elif not self.closing.ended:
            self.closing.raise_()   # closed again while waiting: show what it waits for
            event.ignore()
            return
        settings.put(settings.GEOMETRY, self.saveGeometry())
        self.dataset_page.shutdown()
        if self.project_lock is not None:
            self.project_lock.unlock()
        super().closeEvent(event)
        self.closed.emit()

    def _stop_run_to_close(self) -> bool:
        answer = QMessageBox.question(
            self, "Training is running",
            "Stop the run and save a checkpoint first? (You can resume it later.)",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def _closing_jobs(self) -> list:
        return (self.run_page.closing_jobs() + self.test_page.closing_jobs() + self.dataset_page.closing_jobs()
                + self.training_page.closing_jobs())

    def _wait_for_jobs(self) -> None:
        """Closing: nothing new may start meanwhile, and the status bar says why the window is still here."""
        self.centralWidget().setEnabled(False)
        self.menuBar().setEnabled(False)
        self.statusBar().showMessage("Closing: waiting for running jobs to end…")
