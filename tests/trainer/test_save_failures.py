"""The operating system refusing a save (issue 29): a file past the size limit (a real EFBIG, raised inside
torch.save and inside safetensors), a read-only disk, no permission, a full disk in a one-shot command. Each
is a user error naming the file and the free space, exit code 2, the run resumable; never "this is a bug"."""

from __future__ import annotations

import io
import resource
import subprocess
import sys

import pytest

from tests.support.engine import REPO, _env, make_dataset
from tests.support.loras import our_lora
from trainer.shared.events import decode


def cli(*args, fault: str = "", file_limit: int | None = None):
    """`python -m trainer ARGS`, optionally with a fault (trainer.shared.faults) or a file-size limit (the
    operating system then refuses any write past it with EFBIG, whichever library writes)."""
    env = dict(_env(), LORA_STUDIO_FAULT=fault)

    def limit():
        if file_limit:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    proc = subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=240, preexec_fn=limit, stdin=subprocess.DEVNULL)
    events = [decode(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events, proc.stderr


def train(run, data, **kwargs):
    return cli("train", "--demo", "--out", str(run), "--events", "jsonl", "--set", f"dataset.path={data}",
               "--set", "schedule.max_steps=2", "--set", "sampling.every_n_steps=0",
               "--set", "saving.every_n_steps=1", **kwargs)


# the demo's checkpoint adapter is ~37 KB, its snapshot's adapter ~49 KB (safetensors) and optimizer ~132 KB
# (torch.save): these limits let the first through and stop the second inside each library
@pytest.mark.parametrize("file_limit", [42_000, 100_000], ids=["in safetensors", "in torch.save"])
def test_a_file_past_the_size_limit_is_named_and_the_run_resumes(file_limit, tmp_path):
    data, run = make_dataset(tmp_path / "data", count=2), tmp_path / "run"
    code, events, stderr = train(run, data, file_limit=file_limit)
    error = events[-1]
    assert code == 2 and error.type == "error" and error.kind == "SaveFailed", stderr
    assert f"file too large while saving {run / 'state' / 'step-000001'}" in error.message
    assert "free)" in error.message and "ulimit" in error.hint and f"lora-studio resume {run}" in error.hint
    assert "bug" not in error.hint and "Traceback" not in stderr
    assert not list((run / "state").glob(".tmp-*")), "no half snapshot is left"
    code, events, stderr = cli("resume", str(run), "--events", "jsonl")
    assert code == 0 and events[-1].type == "done", stderr


@pytest.mark.parametrize("fault,headline", [("state@2:erofs", "read-only disk"),
                                            ("write.safetensors@2:eacces", "permission denied")])
def test_a_read_only_or_forbidden_folder_is_a_user_error_and_the_last_save_stays(fault, headline, tmp_path):
    data, run = make_dataset(tmp_path / "data", count=2), tmp_path / "run"
    code, events, stderr = train(run, data, fault=fault)
    assert code == 2 and events[-1].kind == "SaveFailed" and f"{headline} while saving" in events[-1].message
    assert "the previous checkpoint and training state are intact" in events[-1].message
    assert sorted(p.name for p in (run / "state").iterdir()) == ["step-000001"]


def test_a_full_disk_in_a_one_shot_command_is_a_user_error(tmp_path):
    lora = our_lora(tmp_path / "x.safetensors")
    code, _, stderr = cli("export", str(lora), "--to", str(tmp_path / "ui"), fault="write.safetensors:enospc")
    assert code == 2 and "disk full while saving" in stderr and str(tmp_path / "ui") in stderr
    assert "Traceback" not in stderr


def test_a_full_disk_under_events_jsonl_ends_the_copy_not_the_run():
    from trainer.run.sink import EventSink
    from trainer.shared import events as ev

    class Full(io.StringIO):
        def write(self, text):
            raise OSError(28, "No space left on device")

    stream = io.StringIO()
    sink = EventSink(stream, progress_bar=False)
    sink.copy = Full()
    sink.emit(ev.Warning(message="one"))
    sink.emit(ev.Warning(message="two"))
    sink.close()
    assert [decode(line).message for line in stream.getvalue().splitlines()] == ["one", "two"]


def test_a_file_standing_where_the_output_folder_belongs_is_named(tmp_path):
    blocker = tmp_path / "shots"
    blocker.write_text("mine")
    code, _, stderr = cli("generate", "--model", "demo:sd15", "--prompt", "x", "--steps", "1", "--out", str(blocker))
    assert code == 2 and f"a file is in the way while saving {blocker}" in stderr and "Traceback" not in stderr
    assert blocker.read_text() == "mine"
