"""Hostile names and folders (issue 29): every name that becomes a path stays in its folder or is refused
naming its key; `train --out` never writes into a folder of the user's own files; a failed `resume --set`
changes no file; snapshots are ordered by step; NaN and infinity are out of range for every float key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from tests.support.engine import make_dataset, run_cli
from trainer.shared import config as config_mod
from trainer.shared.errors import ConfigError, UserError
from trainer.shared.generate_params import Request
from trainer.shared.paths import contained_path

ESCAPES = ["../../elsewhere/name", "/etc/passwd", "..", "a/../../b", "..\\..\\x", "C:evil", "*", "na[me]",
           "nul\x00byte", "", "  "]
FLOAT_KEYS = [f"{section}.{f.name}" for section, factory in config_mod.SECTIONS.items()
              for f in dataclasses.fields(factory) if f.type in ("float", float)]


@pytest.mark.parametrize("name", ESCAPES)
def test_a_name_that_would_leave_its_folder_is_refused_naming_the_key(name, tmp_path):
    with pytest.raises(UserError, match="my.key"):
        contained_path(tmp_path, name, "my.key", ".safetensors", subfolders=True)
    assert contained_path(tmp_path, "styles/ink", "k", ".safetensors", subfolders=True) == \
        tmp_path / "styles" / "ink.safetensors"


@pytest.mark.parametrize("name", ["../../elsewhere/name", "/abs/name", "sub/name", "*"])
def test_output_name_must_be_a_file_name(name):
    with pytest.raises(ConfigError, match="saving.output_name"):
        config_mod.apply_overrides(config_mod.TrainConfig(), [f'saving.output_name="{name}"'])


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_infinity_are_out_of_range_for_every_float_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_mod.apply_overrides(config_mod.TrainConfig(), [f"{key}={value}"])


@pytest.mark.parametrize("override", ["optimizer.betas=[nan, 0.999]", "optimizer.block_lr=[1, inf, 1]",
                                      "lora.block_alphas=[nan, 1, 1]"])
def test_nan_in_a_list_of_floats_is_refused(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        config_mod.apply_overrides(config_mod.TrainConfig(), [override])


@pytest.mark.parametrize("extension", ["txt", '""', '"."', '".t/x"', '"../x"'])
def test_caption_extension_is_checked_as_a_config_key(extension):
    with pytest.raises(ConfigError, match="dataset.caption_extension"):
        config_mod.apply_overrides(config_mod.TrainConfig(), [f"dataset.caption_extension={extension}"])


def test_a_dataset_toml_with_a_bad_caption_extension_names_the_file(tmp_path):
    from trainer.shared.dataset_layout import read_dataset
    from trainer.shared.errors import DatasetError

    (tmp_path / "dataset.toml").write_text('[[subset]]\nfolder = "."\ncaption_extension = "txt"\n')
    with pytest.raises(DatasetError, match="dataset.toml.*caption_extension"):
        read_dataset(tmp_path)


def test_request_names_and_sizes_are_checked_before_anything_runs():
    for bad in (dict(name="../../x"), dict(width=100000), dict(height=8192), dict(count=10**6),
                dict(cfg=float("nan")), dict(loras=[{"path": "a.safetensors", "weight": float("nan")}])):
        with pytest.raises(ValueError):
            Request(prompt="p", **bad).check()
    with pytest.raises(ValueError, match="prompt"):
        Request.from_dict({"prompt": ["not", "text"]})


def test_snapshots_are_ordered_by_step_past_a_million(tmp_path):
    from trainer.run.state import _prune, latest_snapshot

    for step in (999_998, 999_999, 1_000_000):
        folder = tmp_path / "state" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "COMPLETE").write_text("ok")
    assert latest_snapshot(tmp_path).name == "step-1000000"
    _prune(tmp_path / "state", keep=2)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["step-1000000", "step-999999"]


def test_train_out_into_a_folder_of_the_users_files_changes_nothing(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    files = {"config.toml": "# my notes\n[lora]\nrank = 4\n", "events.jsonl": "my log\n", "notes.txt": "x"}
    for name, text in files.items():
        (out / name).write_text(text)
    code, events, _ = run_cli("train", "--demo", "--out", str(out), "--events", "jsonl")
    assert code == 2 and "not a LoRA Studio run" in events[-1].message
    assert {p.name: p.read_text() for p in out.iterdir()} == files  # not even a .lock was added


def test_an_escaping_output_name_writes_nothing_outside_the_run(tmp_path):
    victim = tmp_path / "elsewhere" / "name.safetensors"
    victim.parent.mkdir()
    victim.write_bytes(b"the user's file")
    code, events, _ = run_cli("train", "--demo", "--out", str(tmp_path / "run" / "a"), "--events", "jsonl",
                              "--set", "saving.output_name=../../elsewhere/name")
    assert code == 2 and "saving.output_name" in events[-1].message
    assert victim.read_bytes() == b"the user's file"


def test_a_failed_resume_set_leaves_the_run_as_it_was_and_resumable(tmp_path):
    data, run = make_dataset(tmp_path / "data", count=2), tmp_path / "run"
    fast = ["--set", f"dataset.path={data}", "--set", "sampling.every_n_steps=0", "--set", "saving.every_n_steps=2"]
    code, _, stderr = run_cli("train", "--demo", "--out", str(run), "--events", "jsonl",
                              "--set", "schedule.max_steps=2", *fast)
    assert code == 0, stderr
    before = (run / "config.toml").read_text()
    code, events, _ = run_cli("resume", str(run), "--events", "jsonl", "--set", "lora.rank=8")
    assert code == 2 and "does not fit" in events[-1].message and "lora.rank" in events[-1].hint
    assert (run / "config.toml").read_text() == before
    code, events, stderr = run_cli("resume", str(run), "--events", "jsonl", "--set", "schedule.max_steps=3")
    assert code == 0, stderr
    assert tomllib.loads((run / "config.toml").read_text())["schedule"]["max_steps"] == 3


def test_generate_refuses_a_lora_tag_outside_the_lora_dir_and_glob_characters(tmp_path):
    from tests.support.loras import our_lora

    our_lora(tmp_path / "outside.safetensors")
    loras = tmp_path / "loras"
    (loras / "a").mkdir(parents=True)
    for prompt, expected in (("<lora:../outside:1>", "leads outside"), ("<lora:*:1>", "not allowed"),
                             (f"<lora:{tmp_path / 'outside'}:1>", "outside")):
        code, _, stderr = run_cli("generate", "--model", "demo:sd15", "--lora-dir", str(loras), "--prompt",
                                  f"a cat {prompt}", "--steps", "1", "--out", str(tmp_path / "out"))
        assert code == 2 and expected in stderr, stderr
    assert not (tmp_path / "out").exists()


def test_a_lora_tag_finds_its_file_in_a_subfolder_by_exact_name(tmp_path):
    from tests.support.loras import our_lora

    loras = tmp_path / "loras"
    our_lora(loras / "styles" / "ink.safetensors")
    our_lora(loras / "styles" / "inky.safetensors", seed=3)
    from trainer.tryit.engine import Generator

    finder = Generator.__new__(Generator)  # _find needs only the folders, not a loaded model
    finder.lora_dirs = [loras]
    assert finder._find("ink") == loras / "styles" / "ink.safetensors"
    assert finder._find("styles/inky") == loras / "styles" / "inky.safetensors"
    our_lora(loras / "other" / "ink.safetensors")
    with pytest.raises(UserError, match="matches 2 files"):
        finder._find("ink")
    assert Path(finder._find("other/ink")).parent.name == "other"
