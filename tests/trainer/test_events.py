"""The JSON-lines protocol: every event round-trips, bad lines are rejected with a reason."""

import json

import pytest

from trainer.shared import events as ev


@pytest.mark.parametrize("event", [
    ev.Started(run_dir="/r", total_steps=10, arch="sd1", device="cpu"),
    ev.Progress(step=1, total=10, epoch=1, loss=0.1, lr=1e-4, it_s=2.0, eta_s=4.5),
    ev.Sample(path="/r/samples/a.png", prompt="a cat", seed=1, step=0),
    ev.Checkpoint(path="/r/c.safetensors", step=5),
    ev.Warning(message="w", hint="h"),
    ev.Error(message="m", hint="h", kind="ConfigError"),
    ev.Done(adapter="/r/a.safetensors", step=10),
])
def test_round_trip(event):
    line = event.encode()
    data = json.loads(line)
    assert data["v"] == 1 and data["type"] == event.type
    assert ev.decode(line) == event


def test_newer_fields_are_ignored():
    line = json.dumps({"v": 1, "type": "checkpoint", "path": "p", "step": 3, "future": True})
    assert ev.decode(line) == ev.Checkpoint(path="p", step=3)


@pytest.mark.parametrize("line, words", [
    ("hello", "not JSON"), ('{"v": 2, "type": "done"}', "not a v1 event"),
    ('{"v": 1, "type": "party"}', "unknown event type"), ('{"v": 1, "type": "checkpoint"}', "missing fields"),
])
def test_bad_lines_are_rejected(line, words):
    with pytest.raises(ev.ProtocolError, match=words):
        ev.decode(line)


def test_nan_loss_cannot_be_encoded():
    with pytest.raises(ValueError):
        ev.Progress(step=1, total=1, epoch=1, loss=float("nan"), lr=0, it_s=0, eta_s=0).encode()


def test_a_resumed_run_cuts_a_torn_last_line_before_appending(tmp_path):
    from trainer.run.sink import EventSink

    whole = ev.Checkpoint(path="/r/c.safetensors", step=4).encode()
    (tmp_path / "events.jsonl").write_text(whole + "\n" + whole[:17], encoding="utf-8")  # killed mid-line
    sink = EventSink(None, progress_bar=False)
    sink.attach_run_dir(tmp_path)
    sink.emit(ev.Done(adapter="/r/a.safetensors", step=8))
    sink.close()
    lines = (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert [ev.decode(line).type for line in lines] == ["checkpoint", "done"]
