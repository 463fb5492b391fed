"""Fault injection through the real CLI: SIGKILL during a step, a sample and a save; out of GPU memory; a
full disk; bad input. After each, every file in the run folder is complete, and `resume` ends with exactly
the adapter of an uninterrupted run with the same seed.

Why bit-identical is the right bar on CPU: resume restores the LoRA weights, the optimizer state, the LR
schedule, the data position and every RNG from the last snapshot, and CPU kernels are deterministic for a
fixed thread count, so the resumed run replays the same arithmetic. (On GPU, non-deterministic kernels
would need a tolerance; that check is still owed.)
"""

import json
import os
import tomllib

import pytest
import torch
from safetensors.torch import load_file

from tests.support.engine import REPO, make_dataset, run_cli

STEPS = ["--set", "schedule.max_steps=12", "--set", "saving.every_n_steps=4", "--set", "sampling.every_n_steps=4",
         "--set", "sampling.steps=2", "--set", "sampling.prompts=[\"a red circle\"]"]


def train(out, *extra, fault=None, monkeypatch=None):
    if fault:
        monkeypatch.setenv("LORA_STUDIO_FAULT", fault)
    try:
        return run_cli("train", "--demo", "--out", str(out), "--events", "jsonl", *STEPS, *extra)
    finally:
        if fault:
            monkeypatch.delenv("LORA_STUDIO_FAULT")


def resume(run_dir):
    return run_cli("resume", str(run_dir), "--events", "jsonl")


def adapter(run_dir):
    return load_file(str(run_dir / "demo-lora.safetensors"))


def assert_same(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed adapter differs from the uninterrupted one"


def assert_run_folder_consistent(run_dir):
    """Every file is a complete old or new version; interrupted writes left only hidden .tmp files."""
    tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    for path in run_dir.rglob("*.safetensors"):
        if not path.name.startswith("."):
            load_file(str(path))
    for path in (run_dir / "samples").glob("*.png"):
        from PIL import Image

        with Image.open(path) as im:
            im.load()
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    for line in lines[:-1]:
        json.loads(line)  # a kill can tear only the line being written, the last one
    for snap in (run_dir / "state").glob("step-*"):
        assert (snap / "COMPLETE").exists() and load_file(str(snap / "adapter.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    code, _events, err = train(out)
    assert code == 0, err
    return adapter(out)


@pytest.mark.parametrize("fault", ["step@6:kill", "sample@8:kill", "write.safetensors@8:kill", "state@8:kill"])
def test_sigkill_leaves_complete_files_and_resume_matches_an_uninterrupted_run(fault, reference, tmp_path,
                                                                              monkeypatch):
    out = tmp_path / "run"
    code, events, _err = train(out, fault=fault, monkeypatch=monkeypatch)
    assert code == -9 and not any(e.type == "done" for e in events)
    assert not (out / "demo-lora.safetensors").exists()
    assert_run_folder_consistent(out)
    code, events, err = resume(out)
    assert code == 0, err
    assert events[0].type == "started" and events[0].resumed_from == 4   # the last complete snapshot
    assert events[-1].type == "done" and events[-1].step == 12
    assert_same(adapter(out), reference)
    assert not list(out.rglob(".*.tmp")), "resume clears the interrupted writes' temp files"


def test_out_of_gpu_memory_names_the_setting_and_stays_resumable(reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    code, events, _err = train(out, fault="step@6:oom", monkeypatch=monkeypatch)
    error = events[-1]
    assert code == 2 and error.type == "error" and "ran out of memory" in error.message
    assert "schedule.batch_size 2 -> 1" in error.hint and "gradient_accumulation 1 -> 2" in error.hint
    assert f"lora-studio resume {out}" in error.hint
    code, _events, err = resume(out)
    assert code == 0, err
    assert_same(adapter(out), reference)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    code, events, _err = train(out, fault="write.safetensors@8:enospc", monkeypatch=monkeypatch)
    error = events[-1]
    assert code == 2 and "is full" in error.message and "previous checkpoint" in error.message
    assert "free some space" in error.hint
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["demo-lora-step000004.safetensors"]
    assert load_file(str(out / "checkpoints" / "demo-lora-step000004.safetensors"))
    assert [p.name for p in (out / "state").iterdir()] == ["step-000004"]
    code, _events, err = resume(out)
    assert code == 0, err
    assert_same(adapter(out), reference)


def test_caption_in_another_encoding_is_a_warning_naming_the_file(tmp_path):
    data = make_dataset(tmp_path / "ds", count=3)
    latin1 = "café, crème".encode("latin-1")
    (data / "img_01.txt").write_bytes(latin1)
    code, events, err = run_cli("train", "--demo", "--out", str(tmp_path / "run"), "--events", "jsonl",
                                "--set", f"dataset.path={data}", "--set", "schedule.max_steps=2",
                                "--set", "sampling.every_n_steps=0")
    assert code == 0, err
    warning = next(e for e in events if e.type == "warning" and "not UTF-8" in e.message)
    assert "img_01.txt" in warning.message and "re-save them as UTF-8" in warning.hint
    assert (data / "img_01.txt").read_bytes() == latin1


def test_broken_config_names_the_file_and_line(tmp_path):
    cfg = tmp_path / "broken.toml"
    cfg.write_text("[lora]\nrank = 16\nalpha = = 3\n", encoding="utf-8")
    code, events, _err = run_cli("train", str(cfg), "--events", "jsonl")
    assert code == 2 and str(cfg) in events[-1].message and "line 3" in events[-1].message


def test_empty_dataset_folder_is_named(tmp_path):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    code, events, _err = run_cli("train", "--demo", "--out", str(tmp_path / "run"), "--events", "jsonl",
                                 "--set", f"dataset.path={empty}")
    assert code == 2 and str(empty) in events[-1].message and "no readable images" in events[-1].message


def test_model_deleted_before_resume_is_named_with_what_to_do(tmp_path, monkeypatch):
    from tests.support.original_layout import save_original_checkpoint
    from trainer.models.tiny import build_tiny_components

    model = save_original_checkpoint(build_tiny_components("sd15"), "sd15", tmp_path / "base.safetensors")
    out = tmp_path / "run"
    code, _events, _err = train(out, "--set", f"model.path={model}", fault="step@6:kill", monkeypatch=monkeypatch)
    assert code == -9
    os.remove(model)
    code, events, _err = resume(out)
    assert code == 2 and str(model) in events[-1].message
    assert "model.path" in events[-1].hint
    assert (out / "state" / "step-000004" / "COMPLETE").exists(), "the run stays resumable"


def test_no_pickle_is_ever_loaded_without_weights_only():
    """Our own files are safetensors; the one torch.load (optimizer state) and .ckpt reading refuse code."""
    offenders = []
    for path in (REPO / "trainer").rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.name}:{number}")
            if "pickle.load" in line:
                offenders.append(f"{path.name}:{number}")
    assert not offenders, offenders
