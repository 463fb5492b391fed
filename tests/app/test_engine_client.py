"""The engine client reads whole lines whatever the pipe does, and errors read the same everywhere."""

import sys
from pathlib import Path

from app.engine_client import EngineCall, EngineProcess, LineBuffer
from app.engine_events import dispatch, stderr_text, with_hint
from app.import_job import ImportJob
from trainer.shared.errors import UserError
from trainer.shared.events import Error, Progress

SPLIT = [sys.executable, str(Path(__file__).with_name("fake_split_engine.py"))]


def test_a_line_split_across_two_reads_is_one_line():
    buffer = LineBuffer()
    data = '{"done": 1, "file": "café"}\n'.encode()
    cut = data.index("é".encode()) + 1
    assert buffer.feed(data[:cut]) == []
    assert buffer.feed(data[cut:] + b"next") == ['{"done": 1, "file": "café"}']
    assert buffer.flush() == ["next"] and buffer.flush() == []
    assert buffer.feed(b"10%\r50%\r100%\r\n") == ["100%"]   # a progress bar's last state


def test_an_import_progress_line_in_two_reads_is_progress_not_an_error(qtbot, tmp_path):
    job = ImportJob([tmp_path / "a.png"], tmp_path / "dataset", engine=SPLIT)
    steps = []
    job.progress.connect(lambda done, total: steps.append((done, total)))
    with qtbot.waitSignal(job.finished, timeout=20_000) as finished:
        job.start()
    assert finished.args[0] == {"imported": 1}
    assert steps == [(1, 2)] and job.error == ""


def test_an_event_in_two_reads_is_one_event(qtbot):
    engine = EngineProcess(engine=SPLIT)
    events, logs = [], []
    engine.event.connect(events.append)
    engine.log_line.connect(logs.append)
    with qtbot.waitSignal(engine.finished, timeout=20_000):
        engine.start(["train", "--events", "jsonl"])
    assert [e.type for e in events] == ["warning", "done"] and events[0].message == "café"
    assert logs == ["log: café"]


def test_an_engine_error_reads_the_same_from_stderr_and_from_an_event(qtbot):
    failure = UserError("model not found: x.safetensors", "choose a .safetensors file")
    stderr = f"loading…\nerror: {failure}\n"   # what a one-shot command prints (trainer.commands.outcome)
    shown = with_hint(failure.message, failure.hint)
    assert stderr_text(stderr) == shown == "model not found: x.safetensors\nWhat to do: choose a .safetensors file"
    assert stderr_text("error: just this\n") == "just this" and stderr_text("a log\nlast words\n") == "last words"
    call = EngineCall(["x"], engine=[sys.executable, "-c", f"import sys; print({stderr!r}, file=sys.stderr); "
                                     "sys.exit(2)"])
    with qtbot.waitSignal(call.done, timeout=20_000) as done:
        pass
    assert done.args == [None, shown]


def test_events_go_to_the_handler_named_for_their_type():
    class Page:
        seen: list = []

        def _on_progress(self, event):
            self.seen.append(event.step)

    page = Page()
    dispatch(page, Progress(step=3, total=4, epoch=1, loss=0.1, lr=1e-4, it_s=1.0, eta_s=1.0))
    dispatch(page, Error(message="no handler for this one"))
    assert page.seen == [3]
