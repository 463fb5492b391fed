"""The demo and the event protocol through the real CLI, as the GUI and CI use them."""

import json

from PIL import Image
from safetensors import safe_open

from tests.support.engine import make_dataset, read_jsonl, run_cli


def test_demo_run_leaves_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    code, events, stderr = run_cli("train", "--demo", "--out", str(out), "--events", "jsonl",
                                   "--set", "schedule.max_steps=8", "--set", "sampling.every_n_steps=4",
                                   "--set", "saving.every_n_steps=4")
    assert code == 0, stderr
    types = [e.type for e in events]
    assert types[0] == "started" and types[-1] == "done"
    assert [e.step for e in events if e.type == "progress"] == list(range(1, 9))
    # stdout carried only events, and events.jsonl is an exact copy of them
    assert [e["type"] for e in read_jsonl(out / "events.jsonl")] == types

    samples = [e for e in events if e.type == "sample"]
    assert sorted({e.step for e in samples}) == [0, 4, 8]  # step-0 baseline, then every 4 steps
    png = Image.open(samples[-1].path)
    assert png.text["prompt"] == samples[-1].prompt and png.text["step"] == "8"
    assert "Sampler: Euler a" in png.text["parameters"]

    assert [e.step for e in events if e.type == "checkpoint"] == [4]
    adapter = out / "demo-lora.safetensors"
    assert events[-1].adapter == str(adapter)
    with safe_open(str(adapter), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        alpha = f.get_tensor(next(k for k in keys if k.endswith(".alpha"))).item()
    assert all(k.startswith("lora_unet_") for k in keys)
    assert {k.rsplit(".", 2)[-2] for k in keys if k.endswith(".weight")} == {"lora_down", "lora_up"}
    assert alpha == 4.0 and meta["ss_network_alpha"] == "4.0" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_steps"] == "8" and "demo-lora" == meta["modelspec.title"]
    assert list((out / "logs").glob("events.out.tfevents.*")), "TensorBoard logs missing"
    assert (out / "config.toml").read_text().count("max_steps = 8") == 1


def test_config_error_is_an_error_event_naming_the_key(tmp_path):
    code, events, stderr = run_cli("train", "--demo", "--out", str(tmp_path / "r"), "--events", "jsonl",
                                   "--set", "lora.rank=0")
    assert code == 2
    assert events[-1].type == "error" and "lora.rank" in events[-1].message
    assert "Traceback" not in stderr


def test_missing_dataset_is_named(tmp_path):
    code, events, _ = run_cli("train", "--demo", "--out", str(tmp_path / "r"), "--events", "jsonl",
                              "--set", f"dataset.path={tmp_path / 'nowhere'}")
    assert code == 2 and "nowhere" in events[-1].message and events[-1].hint


def test_stop_command_saves_then_resume_finishes(tmp_path):
    out = tmp_path / "run"
    stop = json.dumps({"cmd": "stop"}) + "\n"
    code, events, stderr = run_cli("train", "--demo", "--out", str(out), "--events", "jsonl",
                                   "--set", "schedule.max_steps=400", "--set", "sampling.every_n_steps=0",
                                   input_text=stop)
    assert code == 0, stderr
    done = events[-1]
    assert done.type == "done" and done.stopped_early and done.step < 400
    assert (out / "demo-lora.safetensors").exists()

    code, events, stderr = run_cli("resume", str(out), "--events", "jsonl", "--set", "schedule.max_steps=24"
                                   if done.step < 24 else f"schedule.max_steps={done.step + 4}")
    assert code == 0, stderr
    assert events[0].resumed_from == done.step
    assert events[-1].type == "done" and not events[-1].stopped_early
    assert events[-1].step == max(24, done.step + 4)


def test_unreadable_images_are_left_out_with_a_warning_naming_them(tmp_path):
    data = make_dataset(tmp_path / "d", count=3)
    (data / "img_01.png").write_text("a broken download")
    code, events, stderr = run_cli("train", "--demo", "--out", str(tmp_path / "run"), "--events", "jsonl",
                                   "--set", f"dataset.path={data}", "--set", "schedule.max_steps=1",
                                   "--set", "sampling.every_n_steps=0")
    assert code == 0, stderr
    warnings = [e for e in events if e.type == "warning" and "cannot be read" in e.message]
    assert len(warnings) == 1 and "img_01.png" in warnings[0].message and "img_00" not in warnings[0].message


def test_train_refuses_to_overwrite_an_existing_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text("schema_version = 1\n")
    (out / "events.jsonl").write_text('{"v": 1, "type": "progress", "step": 1}\n')  # a step was done
    code, events, _ = run_cli("train", "--demo", "--out", str(out), "--events", "jsonl")
    assert code == 2 and "already holds a run" in events[-1].message
    assert "lora-studio resume" in events[-1].hint
    assert (out / "config.toml").read_text() == "schema_version = 1\n"


def test_a_start_that_failed_before_any_step_can_be_retried_in_the_same_folder(tmp_path):
    out = tmp_path / "run"
    code, events, _ = run_cli("train", "--demo", "--out", str(out), "--events", "jsonl",
                              "--set", f"dataset.path={tmp_path / 'nowhere'}")
    assert code == 2 and (out / "config.toml").exists()
    code, events, stderr = run_cli("train", "--demo", "--out", str(out), "--events", "jsonl",
                                   "--set", "schedule.max_steps=2", "--set", "sampling.every_n_steps=0")
    assert code == 0, stderr
    assert [e["type"] for e in read_jsonl(out / "events.jsonl")] == [e.type for e in events]  # no stale error


def test_a_hand_written_config_takes_the_trigger_word_from_the_captions(tmp_path):
    dataset = make_dataset(tmp_path / "zkx")  # every caption starts with "tok", as prepare-captions writes
    config = tmp_path / "my.toml"
    config.write_text(f'[model]\npath = "demo:sd15"\n[dataset]\npath = "{dataset.as_posix()}"\nresolution = 64\n'
                      '[schedule]\nmax_steps = 2\n[sampling]\nevery_n_steps = 2\nsteps = 2\n'
                      '[saving]\noutput_name = "zkx"\n', encoding="utf-8")
    out = tmp_path / "run"
    code, events, stderr = run_cli("train", str(config), "--out", str(out), "--events", "jsonl")
    assert code == 0, stderr
    assert any(e.type == "warning" and "'tok'" in e.message for e in events)
    assert {e.prompt for e in events if e.type == "sample"} == {"tok, a photo"}
    with safe_open(str(out / "zkx.safetensors"), "pt") as f:
        assert f.metadata()["modelspec.trigger_phrase"] == "tok"


def test_demo_with_a_real_model_says_which_demo_settings_remain(tmp_path):
    code, events, _ = run_cli("train", "--demo", "--out", str(tmp_path / "r"), "--events", "jsonl",
                              "--set", f"model.path={tmp_path / 'mine.safetensors'}", "--set", "lora.rank=16")
    warning = next(e for e in events if e.type == "warning")
    assert "optimizer.lr = 0.001" in warning.message and "saving.output_name = 'demo-lora'" in warning.message
    assert "lora.rank" not in warning.message  # overridden: not the demo's any more
    assert code == 2 and "mine.safetensors" in events[-1].message


def test_self_test_is_handed_to_the_app(monkeypatch):
    from trainer.commands import dispatch as cli

    launched = []
    monkeypatch.setattr(cli, "_launch_gui", lambda argv: launched.append(argv) or 0)
    assert cli.main(["--self-test"]) == 0 and launched == [["--self-test"]]
