"""Validation loss on held-out images: fixed timesteps and noise (so it only moves when the weights do),
as an event, in TensorBoard, and the held-out images are never trained on."""

import json

import pytest
from safetensors import safe_open

from tests.support.engine import make_dataset, run_cli, tiny_config, train_in_process
from trainer.data.records import load_records
from trainer.families.ddpm import Ddpm
from trainer.run.validation import fixed_timesteps, split_validation
from trainer.shared.errors import DatasetError


def test_validation_through_the_cli_reports_and_logs_and_holds_images_out(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    make_dataset(tmp_path / "data", count=6)
    out = tmp_path / "run"
    code, events, stderr = run_cli(
        "train", "--demo", "--out", str(out), "--events", "jsonl", "--set", f"dataset.path={tmp_path / 'data'}",
        "--set", "validation.fraction=0.34", "--set", "validation.every_n_steps=2", "--set", "schedule.max_steps=3",
        "--set", "sampling.every_n_steps=0", "--set", "saving.every_n_steps=0", "--set", "optimizer.lr=1e-2")
    assert code == 0, stderr
    checks = [e for e in events if e.type == "validation"]
    assert [(e.step, e.images) for e in checks] == [(2, 2), (3, 2)]  # every 2 steps and at the end
    assert checks[0].loss != checks[1].loss and all(0 < e.loss < 10 for e in checks)
    logs = EventAccumulator(str(out / "logs")).Reload()
    assert [s.step for s in logs.Scalars("loss/validation")] == [2, 3]
    with safe_open(str(out / "demo-lora.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["ss_num_train_images"] == "4"
    assert json.loads(meta["ss_tag_frequency"])["data"]["tok"] == 4  # held-out captions aren't counted


def test_without_training_the_validation_loss_does_not_move(tmp_path, dataset_dir):
    """Fixed timesteps, noise and latents: the number changes only when the weights do."""
    cfg = tiny_config(dataset_dir, validation__fraction=0.2, validation__every_n_steps=1, schedule__max_steps=3,
                      optimizer__lr=0.0, optimizer__weight_decay=0.0)
    _, sink = train_in_process(cfg, tmp_path / "run")
    values = [e.loss for e in sink.of_type("validation")]
    assert len(values) == 3 and values[0] == values[1] == values[2]


def test_held_out_images_come_from_validation_subsets_or_the_fraction(tmp_path):
    data = make_dataset(tmp_path / "data" / "train", count=4)
    make_dataset(tmp_path / "data" / "held", count=2)
    (tmp_path / "data" / "dataset.toml").write_text(
        '[[subset]]\nfolder = "train"\n\n[[subset]]\nfolder = "held"\nvalidation = true\n', encoding="utf-8")
    cfg = tiny_config(tmp_path / "data")
    train, held = split_validation(cfg, load_records(cfg))
    assert len(train) == 4 and {r.path.parent.name for r in held} == {"held"}

    cfg = tiny_config(data, validation__fraction=0.5)
    train, held = split_validation(cfg, load_records(cfg))
    assert len(train) == len(held) == 2 and not {r.path for r in train} & {r.path for r in held}

    (tmp_path / "data" / "dataset.toml").write_text('[[subset]]\nfolder = "held"\nvalidation = true\n')
    with pytest.raises(DatasetError, match="held out"):
        split_validation(tiny_config(tmp_path / "data"), load_records(tiny_config(tmp_path / "data")))


def test_fixed_timesteps_cover_the_trained_range():
    cfg = tiny_config(".", validation__timesteps=4, loss__min_timestep=200, loss__max_timestep=600)
    assert fixed_timesteps(cfg, Ddpm()) == [250, 350, 450, 550]
