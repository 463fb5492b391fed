"""Hostile stdin (issue 29): every line is checked whole; a bad one is reported and changes nothing; no line,
however long or odd, ends the reading thread, so `stop` and the end of input are always heard."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from tests.support.engine import REPO, _env, make_dataset, run_cli
from trainer.run.control import MAX_LINE, Control
from trainer.shared.events import decode

BAD_LINES = ['{"cmd": ["generate"]}', "not json at all", '{"cmd": "stop", "extra": 1}', '{"cmd": NaN}',
             "[1, 2]", '{"cmd": {"x": 1}}', "[" * 100_000, '{"cmd": "launch"}']


def test_bad_lines_are_reported_and_the_thread_keeps_listening():
    huge = "x" * (3 * MAX_LINE) + "\n"  # skipped in pieces: never held whole
    stream = io.StringIO("\n".join(BAD_LINES) + "\n" + huge + '{"cmd": "sample"}\n{"cmd": "stop"}\n')
    control, errors = Control(), []
    control.listen_stdin(stream, on_error=errors.append).join(timeout=10)
    assert control.take("sample") and control.stop_requested
    assert len(errors) == len(BAD_LINES) + 1 and any("longer than" in e for e in errors)


def test_requests_go_on_and_the_end_of_input_always_arrives():
    stream = io.StringIO('{"cmd": ["generate"]}\n{"cmd": "generate", "id": "a"}\n\n{"cmd": "stop"}\n')
    control, errors, requests = Control(), [], []
    control.listen_stdin(stream, on_request=requests.append, on_error=errors.append, flags=("stop",)).join(10)
    assert [r["cmd"] for r in requests] == ["generate", "eof"] and len(errors) == 1 and control.stop_requested


def test_serve_answers_each_bad_request_and_exits_when_stdin_closes(tmp_path):
    out = str(tmp_path / "out")
    lines = ['{"cmd": ["generate"]}', "garbage", json.dumps({"cmd": "generate", "id": "wide", "prompt": "p",
                                                            "width": 100000, "out": out}),
             json.dumps({"cmd": "combine", "id": "c"}), json.dumps({"cmd": "generate", "id": "n", "prompt": "p",
                                                                   "loras": [{"path": "a", "weight": "heavy"}]}),
             json.dumps({"cmd": "generate", "id": "ok", "prompt": "a red dot", "steps": 1, "width": 64,
                         "height": 64, "out": out, "name": "ok"})]
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "serve", "--model", "demo:sd15"], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO,
                            env=_env())
    try:
        stdout, _ = proc.communicate("\n".join(lines) + "\n", timeout=120)  # closes stdin: serve must end
    finally:
        proc.kill()
    events = [decode(line) for line in stdout.splitlines()]
    errors = [e for e in events if e.type == "error"]
    assert proc.returncode == 0 and events[-1].type == "done"
    assert len(errors) == 5 and {e.job for e in errors} >= {"wide", "c", "n"}
    assert "width 100000" in next(e.message for e in errors if e.job == "wide")
    assert [e.job for e in events if e.type == "job_done"][-1] == "ok"


def test_train_still_obeys_stop_after_a_bad_line(tmp_path):
    data = make_dataset(tmp_path / "data", count=2)
    code, events, stderr = run_cli("train", "--demo", "--out", str(tmp_path / "run"), "--events", "jsonl",
                                   "--set", f"dataset.path={data}", "--set", "schedule.max_steps=30",
                                   "--set", "sampling.every_n_steps=0", "--set", "saving.every_n_steps=0",
                                   input_text='{"cmd": ["stop"]}\n{"cmd": "stop"}\n')
    assert code == 0, stderr
    assert events[-1].type == "done" and events[-1].stopped_early
    assert any(e.type == "warning" and "not a command" in e.message for e in events)
