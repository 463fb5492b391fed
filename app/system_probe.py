"""What this computer offers (`system --json`: GPU, RAM, optional pieces), asked ONCE per app and shared by
the start page's facts, Help › This computer and the wizard. The engine child imports torch, so it starts
after the window is shown (app/__main__.py), never before; tests inject a report instead."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from app.engine_client import EngineCall


class SystemProbe(QObject):
    ready = Signal(dict, str)    # the report ({} when the engine could not be asked), the error text

    def __init__(self, parent=None, engine: list[str] | None = None):
        super().__init__(parent)
        self.engine = engine
        self.report: dict | None = None
        self.error = ""
        self.call: EngineCall | None = None

    def start(self) -> None:
        """Ask the engine, unless an answer is here or on its way."""
        if self.report is None and self.call is None:
            self.call = EngineCall(["system", "--json"], self, self.engine)
            self.call.done.connect(lambda report, error: self.inject(report or {}, error))

    def inject(self, report: dict, error: str = "") -> None:
        """The answer (tests pass a made-up one: the suite must not depend on this machine's GPU)."""
        self.report, self.error = report, error
        self.ready.emit(report, error)

    def when_ready(self, slot) -> None:
        """Call SLOT(report, error) now if the answer is here, else when it comes (and start asking)."""
        if self.report is not None:
            slot(self.report, self.error)
        else:
            self.ready.connect(slot)
            self.start()


_probe: SystemProbe | None = None


def system_probe() -> SystemProbe:
    """The app's one probe (created on first use, owned by the QApplication)."""
    global _probe
    if _probe is None:
        from PySide6.QtCore import QCoreApplication

        _probe = SystemProbe(QCoreApplication.instance())
    return _probe
