"""Fault injection through the real CLI: SIGKILL during a step, a sample and each kind of save; a diverged
run; out of GPU memory; a full disk; bad input. After each, every file in the run folder is complete, and
`resume` ends with exactly the adapter of an uninterrupted run with the same seed.

The faults come from trainer/faults.py (LORA_STUDIO_FAULT, inert unless set). Several faults hit the same
run folder one after another, as a crash-prone machine would, which also keeps the suite quick: most of a
CLI run's time is importing torch.

Why bit-identical is the right bar on CPU: resume restores the LoRA weights, the optimizer state, the LR
schedule, the data position and every RNG from the last snapshot, and CPU kernels are deterministic for a
fixed thread count, so the resumed run replays the same arithmetic. (On GPU, non-deterministic kernels
would need a tolerance; that check is still owed.)

events.jsonl: after a SIGKILL every line but the last must parse. The sink writes one line per write()
call, so a kill cannot tear a line in practice, but a line longer than the file buffer goes out in several
system calls; the contract is therefore "only the last line may be torn", and resume cuts such a line before
appending (tests/trainer/test_events.py covers the cut), so a finished run's copy parses completely.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib

import pytest
import torch
from safetensors.torch import load_file

from tests.support.engine import REPO, _env, make_dataset
from trainer.shared.events import decode

FAST = ["--set", "schedule.max_steps=12", "--set", "saving.every_n_steps=4", "--set", "sampling.every_n_steps=4",
        "--set", "sampling.steps=2", "--set", "sampling.prompts=[\"a red circle\"]"]


def cli(*args, fault=None):
    """`python -m trainer ARGS --events jsonl`; a killed run may have torn its last stdout line."""
    env = _env()
    env.pop("LORA_STUDIO_FAULT", None)
    if fault:
        env["LORA_STUDIO_FAULT"] = fault
    proc = subprocess.run([sys.executable, "-m", "trainer", *args, "--events", "jsonl"], capture_output=True,
                          text=True, timeout=240, cwd=REPO, env=env, stdin=subprocess.DEVNULL)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode == -9 and lines and not lines[-1].endswith("}"):
        lines.pop()
    return proc.returncode, [decode(line) for line in lines], proc.stderr


def train(out, *extra, fault=None):
    return cli("train", "--demo", "--out", str(out), *FAST, *extra, fault=fault)


def resume(run_dir, fault=None):
    return cli("resume", str(run_dir), fault=fault)


def adapter(run_dir):
    return load_file(str(run_dir / "demo-lora.safetensors"))


def assert_same(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed adapter differs from the uninterrupted one"


def assert_run_folder_consistent(run_dir, finished=False):
    """Every file is a complete old or new version; interrupted writes left only hidden .tmp files."""
    from trainer.run.state import latest_snapshot, load_state

    tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    for path in run_dir.rglob("*.safetensors"):
        if any(part.startswith(".") for part in path.relative_to(run_dir).parts):
            continue  # inside an interrupted snapshot's hidden temp folder
        assert all(torch.isfinite(t).all() for t in load_file(str(path)).values()), path
    for path in (run_dir / "checkpoints").glob("*"):
        assert path.suffix == ".safetensors" or (path.name.startswith(".") and path.suffix == ".tmp"), path
    for path in (run_dir / "samples").glob("*.png"):
        from PIL import Image

        with Image.open(path) as im:
            im.load()
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    for line in lines if finished else lines[:-1]:
        json.loads(line)
    snapshots = list((run_dir / "state").glob("step-*"))
    assert all((s / "COMPLETE").exists() for s in snapshots), "half snapshots are never renamed into place"
    if snapshots:
        load_state(latest_snapshot(run_dir))  # temp folders (.tmp-*) are never taken for snapshots


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    code, _events, err = train(out)
    assert code == 0, err
    return adapter(out)


# (fault, the step the next resume starts from): the step-8 save is interrupted three ways, so each resume
# goes back to the step-4 snapshot; the kill while writing the final adapter leaves the step-8 snapshot.
KILLS = [("step@6:kill", 4), ("sample@8:kill", 4), ("write.safetensors@8:kill", 4), ("state@8:kill", 4),
         ("write.safetensors@12:kill", 8)]


def test_sigkill_at_every_point_leaves_complete_files_and_resume_matches_an_uninterrupted_run(reference,
                                                                                               tmp_path):
    out = tmp_path / "run"
    for number, (fault, next_start) in enumerate(KILLS):
        code, events, err = train(out, fault=fault) if number == 0 else resume(out, fault=fault)
        assert code == -9, f"{fault}: {err[-3000:]}"
        assert not any(e.type == "done" for e in events)
        assert not (out / "demo-lora.safetensors").exists(), fault
        assert_run_folder_consistent(out)
        from trainer.run.state import latest_snapshot

        assert latest_snapshot(out).name == f"step-{next_start:06d}", fault
    code, events, err = resume(out)
    assert code == 0, err
    assert events[0].type == "started" and events[0].resumed_from == 8
    assert events[-1].type == "done" and events[-1].step == 12
    assert_same(adapter(out), reference)
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob(".tmp-*")), "resume clears interrupted writes"
    assert_run_folder_consistent(out, finished=True)


def test_out_of_memory_and_full_disk_explain_what_to_do_and_stay_resumable(reference, tmp_path):
    out = tmp_path / "run"
    code, events, _err = train(out, fault="step@6:oom")
    error = events[-1]
    assert code == 2 and error.type == "error" and "ran out of memory" in error.message
    assert "schedule.batch_size 2 -> 1" in error.hint and "gradient_accumulation 1 -> 2" in error.hint
    assert "gradient_checkpointing = true" in error.hint and f"lora-studio resume {out}" in error.hint

    step4 = out / "checkpoints" / "demo-lora-step000004.safetensors"
    for fault, target in [("write.safetensors@8:enospc", out / "checkpoints" / "demo-lora-step000008.safetensors"),
                          ("state@8:enospc", out / "state" / "step-000008")]:
        code, events, _err = resume(out, fault=fault)
        error = events[-1]
        assert code == 2 and error.type == "error" and error.kind == "DiskFull", fault
        assert f"disk full while saving {target}" in error.message and "free)" in error.message
        assert "free at least" in error.hint and f"lora-studio resume {out}" in error.hint
        assert load_file(str(step4)), "the previous checkpoint is intact"
        assert [p.name for p in (out / "state").iterdir()] == ["step-000004"], "no half snapshot is left"
        assert not list(out.rglob(".*.tmp")), "the temp file is removed"
    code, _events, err = resume(out)
    assert code == 0, err
    assert_same(adapter(out), reference)


def test_divergence_stops_with_advice_and_never_writes_nan_weights(tmp_path):
    out = tmp_path / "run"
    # lr 10 without gradient clipping: the weights themselves turn NaN after a few steps (which one depends
    # on the CPU's float kernels) while the loss still looks fine, the case that a loss check alone misses
    code, events, err = train(out, "--set", "optimizer.lr=10", "--set", "optimizer.max_grad_norm=0",
                              "--set", "saving.every_n_steps=1", "--set", "sampling.every_n_steps=0")
    error = events[-1]
    assert code == 2 and error.type == "error" and "training diverged" in error.message, err
    step = int(re.search(r"NaN/inf at step (\d+)", error.message)[1])
    for advice in ("lower the learning rate", "bf16 instead of fp16", "fp32 VAE"):
        assert advice in error.hint
    last_good = out / "checkpoints" / f"demo-lora-step{step - 1:06d}.safetensors"
    assert f"the last good checkpoint is {last_good}" in error.hint
    assert not (out / "demo-lora.safetensors").exists()
    assert_run_folder_consistent(out)  # every .safetensors there, state included, holds finite values only


def test_caption_in_another_encoding_is_trained_as_empty_with_a_warning_naming_the_file(tmp_path):
    data = make_dataset(tmp_path / "ds", count=3)
    latin1 = "café, crème".encode("latin-1")
    (data / "img_01.txt").write_bytes(latin1)
    code, events, err = cli("train", "--demo", "--out", str(tmp_path / "run"), "--set", f"dataset.path={data}",
                            "--set", "schedule.max_steps=2", "--set", "sampling.every_n_steps=0")
    assert code == 0, err
    warning = next(e for e in events if e.type == "warning" and "not UTF-8" in e.message)
    assert "img_01.txt" in warning.message and "empty captions" in warning.message
    assert "re-save them as UTF-8" in warning.hint
    assert (data / "img_01.txt").read_bytes() == latin1


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_MARKER",))


def _bad_input(case, user):
    """Build one bad input inside the user's folder; return (CLI args, words the error must contain)."""
    data = make_dataset(user / "images", count=2)
    if case == "broken toml":
        (user / "cfg.toml").write_text("[lora]\nrank = 16\nalpha = = 3\n", encoding="utf-8")
        return ["train", str(user / "cfg.toml")], [str(user / "cfg.toml"), "line 3"]
    if case == "unknown key":
        (user / "cfg.toml").write_text(f"[dataset]\npath = '{data}'\n[lora]\nrnak = 4\n", encoding="utf-8")
        return ["train", str(user / "cfg.toml")], [str(user / "cfg.toml"), "lora.rnak", "known keys"]
    if case == "missing dataset":
        return ["train", "--demo", "--set", f"dataset.path={user / 'nowhere'}"], [str(user / "nowhere")]
    if case == "empty dataset":
        (user / "empty").mkdir()
        return ["train", "--demo", "--set", f"dataset.path={user / 'empty'}"], [str(user / "empty"),
                                                                               "no readable images"]
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "payload": _Payload()},
               user / "evil.ckpt")
    return ["train", "--demo", "--set", f"model.path={user / 'evil.ckpt'}", "--set",
            f"dataset.path={data}"], [str(user / "evil.ckpt"), "wants to run code"]


def _tree_digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["broken toml", "unknown key", "missing dataset", "empty dataset",
                                  "pickle that runs code"])
def test_bad_input_is_an_error_event_naming_the_thing_and_changes_nothing_of_the_users(case, tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    args, words = _bad_input(case, user)
    before = _tree_digest(user)
    code, events, err = cli(*args, "--out", str(tmp_path / "run"))
    assert code == 2, err
    assert events and events[-1].type == "error" and events[-1].hint, err
    error = events[-1]
    assert words[0] in error.message, "the message names the file or folder"
    assert all(word in f"{error.message} {error.hint}" for word in words[1:]), error
    assert "Traceback" not in err and "hint:" in err  # the person at a terminal reads message and hint
    assert _tree_digest(user) == before
    assert not (REPO / "PWNED_MARKER").exists() and not (tmp_path / "PWNED_MARKER").exists()


def test_model_deleted_before_resume_is_named_with_what_to_do(tmp_path):
    from trainer.families.ldm_layout import save_original_checkpoint
    from trainer.models.tiny import build_tiny_components

    model = save_original_checkpoint(build_tiny_components("sd15"), "sd15", tmp_path / "base.safetensors")
    out = tmp_path / "run"
    code, _events, _err = train(out, "--set", f"model.path={model}", fault="step@6:kill")
    assert code == -9
    os.remove(model)
    code, events, err = resume(out)
    assert code == 2 and str(model) in events[-1].message
    assert "model.path" in events[-1].hint and "Traceback" not in err
    assert (out / "state" / "step-000004" / "COMPLETE").exists(), "the run stays resumable"


def test_a_run_folder_in_use_is_refused_and_the_lock_dies_with_its_process(tmp_path):
    out = tmp_path / "run"
    env = _env()
    env.pop("LORA_STUDIO_FAULT", None)
    first = subprocess.Popen([sys.executable, "-m", "trainer", "train", "--demo", "--out", str(out), "--events",
                              "jsonl", "--set", "schedule.max_steps=100000", "--set", "sampling.every_n_steps=0"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             cwd=REPO, env=env)
    try:
        while decode(first.stdout.readline()).type != "progress":
            pass
        code, events, err = resume(out)
        assert code == 2 and f"in use by another training process (pid {first.pid})" in events[-1].message, err
        assert "Traceback" not in err
    finally:
        first.kill()  # SIGKILL: the lock must not outlive its holder
        first.wait()
    from trainer.shared import fsutil

    assert fsutil.lock_folder(out) is None, "a killed holder's lock is gone"
    fsutil._held.pop().close()


def test_no_pickle_is_ever_loaded_without_weights_only():
    """Our own files are safetensors; the one torch.load (optimizer state) and .ckpt reading refuse code."""
    offenders = []
    for path in (REPO / "trainer").rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.name}:{number}")
            if "pickle.load" in line or "pickle.Unpickler" in line:
                offenders.append(f"{path.name}:{number}")
    assert not offenders, offenders
