"""Every optimizer, schedule and speed option the config offers runs on the tiny models."""

import pytest
from PIL import Image

from tests.support.engine import tiny_config, train_in_process
from trainer.shared.errors import ConfigError


@pytest.mark.parametrize("name", ["adamw", "prodigy", "adafactor"])
def test_optimizers_train(tmp_path, dataset_dir, name):
    lr = 1.0 if name == "prodigy" else 1e-3
    cfg = tiny_config(dataset_dir, optimizer__name=name, optimizer__lr=lr, schedule__max_steps=2)
    adapter, sink = train_in_process(cfg, tmp_path / "run")
    assert adapter.exists() and len(sink.of_type("progress")) == 2


def test_adamw8bit_without_cuda_says_what_to_use(tmp_path, dataset_dir):
    cfg = tiny_config(dataset_dir, optimizer__name="adamw8bit", schedule__max_steps=1)
    with pytest.raises(ConfigError, match="optimizer.name") as err:
        train_in_process(cfg, tmp_path / "run")
    assert "adamw" in err.value.hint


@pytest.mark.parametrize("schedule", ["constant_with_warmup", "cosine_with_restarts", "linear"])
def test_lr_schedules_shape_the_rate(tmp_path, dataset_dir, schedule):
    cfg = tiny_config(dataset_dir, schedule__lr_scheduler=schedule, schedule__warmup_steps=2,
                      schedule__max_steps=6, schedule__num_cycles=2)
    _, sink = train_in_process(cfg, tmp_path / "run")
    lrs = [e.lr for e in sink.of_type("progress")]
    assert lrs[0] < cfg.optimizer.lr  # warming up
    assert max(lrs) == pytest.approx(cfg.optimizer.lr, rel=0.35)


def test_sdxl_with_text_encoders_checkpointing_and_dpmpp_previews(tmp_path, dataset_dir):
    cfg = tiny_config(dataset_dir, model__path="demo:sdxl", lora__train_text_encoder=True,
                      performance__gradient_checkpointing=True, schedule__max_steps=2,
                      sampling__every_n_steps=2, sampling__sampler="dpmpp_2m_karras", sampling__steps=3)
    adapter, sink = train_in_process(cfg, tmp_path / "run")
    samples = sink.of_type("sample")
    assert [s.step for s in samples] == [0, 0, 2, 2]
    png = Image.open(samples[-1].path)
    assert "DPM++ 2M Karras" in png.text["parameters"] and png.size == (64, 64)
    from safetensors import safe_open

    with safe_open(str(adapter), "pt") as f:
        keys = list(f.keys())
        version = f.metadata()["ss_base_model_version"]
    assert version == "sdxl_base_v1-0"
    assert any(k.startswith("lora_te1_text_model_encoder_layers_0_") for k in keys)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_0_") for k in keys)
    assert any(k.startswith("lora_unet_input_blocks_") for k in keys)


def test_sample_and_save_commands_act_at_the_next_step(tmp_path, dataset_dir):
    from tests.support.engine import RecordingSink
    from trainer.run.control import Control

    cfg = tiny_config(dataset_dir, schedule__max_steps=3)
    control = Control()
    control.listening = True  # as when the app is attached: it may ask for a sample at any step
    control.request("sample")
    control.request("save")
    from trainer.run.loop import train
    from trainer.shared import config as config_mod

    run = tmp_path / "run"
    run.mkdir()
    config_mod.save(cfg, run / "config.toml")
    sink = RecordingSink(control)
    train(cfg, run, sink, control)
    assert [s.step for s in sink.of_type("sample")] == [1, 1]
    assert [c.step for c in sink.of_type("checkpoint")] == [1]
