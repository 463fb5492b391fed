"""The torch-free rules the GUI imports (trainer/shared, trainer/run_folder) give the engine's own answers."""

import pytest
from PIL import Image

from trainer.data.spec import list_images, read_dataset
from trainer.run.batches import Batches
from trainer.run.validation import split_validation
from trainer.shared import steps
from trainer.shared.config import TrainConfig
from trainer.shared.images import images_in
from trainer.shared.run_folder import (
    checkpoint_for_step,
    checkpoint_step,
    parse_sample,
    sample_name,
    samples_in,
)

SIZES = [(64, 64), (64, 64), (128, 64), (64, 128), (96, 64), (64, 64), (200, 100)]


def _kohya_dataset(root):
    for folder, sizes in (("10_shapes", SIZES[:4]), ("3_more", SIZES[4:])):
        (root / folder / ".excluded").mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new("RGB", size).save(root / folder / f"{i}.png")
        Image.new("RGB", (64, 64)).save(root / folder / ".excluded" / "aside.png")
    return root


def _toml_dataset(root):
    _kohya_dataset(root)
    (root / "dataset.toml").write_text('[[subset]]\nfolder = "10_shapes"\nrepeats = 2\n\n'
                                       '[[subset]]\nfolder = "3_more"\nresolution = 128\n', encoding="utf-8")
    return root


@pytest.mark.parametrize("layout", [_kohya_dataset, _toml_dataset])
@pytest.mark.parametrize("batch, repeats, accumulation, epochs, fraction, upscale", [
    (1, 1, 1, 3, 0.0, False), (2, 2, 1, 2, 0.0, True), (3, 1, 2, 5, 0.3, False), (2, 1, 1, 0, 0.0, False)])
def test_the_guis_step_count_is_the_engines(tmp_path, layout, batch, repeats, accumulation, epochs, fraction,
                                            upscale):
    root = layout(tmp_path / "data")
    cfg = TrainConfig()
    cfg.dataset.resolution, cfg.dataset.repeats, cfg.dataset.allow_upscale = 64, repeats, upscale
    cfg.schedule.batch_size, cfg.schedule.gradient_accumulation, cfg.schedule.epochs = batch, accumulation, epochs
    cfg.validation.fraction = fraction
    training, _held = split_validation(cfg, list_images(read_dataset(root)))
    engine_batches = Batches(cfg, training).batches_per_epoch()
    assert steps.steps_for(cfg, steps.scan(root)) == (engine_batches, steps.total_steps(cfg, engine_batches))


def test_run_folder_names_round_trip(tmp_path):
    (tmp_path / "samples").mkdir()
    (tmp_path / "checkpoints").mkdir()
    for step, index in ((0, 0), (40, 1), (1200, 0)):
        (tmp_path / "samples" / sample_name(step, index)).write_bytes(b"")
    (tmp_path / "samples" / "notes.png").write_bytes(b"")
    assert [(s, i) for _p, s, i in samples_in(tmp_path)] == [(0, 0), (40, 1), (1200, 0)]
    assert parse_sample(tmp_path / "samples" / "notes.png") is None
    checkpoint = tmp_path / "checkpoints" / "my-lora-step001200.safetensors"
    checkpoint.write_bytes(b"")
    assert checkpoint_step(checkpoint) == 1200 and checkpoint_for_step(tmp_path, 1200) == checkpoint
    assert checkpoint_for_step(tmp_path, 120) is None


def test_setting_aside_a_name_twice_keeps_both_images_and_their_captions(tmp_path):
    from trainer.shared.images import set_aside

    for colour in ("red", "blue"):  # the same file name excluded, re-imported, excluded again
        Image.new("RGB", (64, 64), colour).save(tmp_path / "a.png")
        (tmp_path / "a.txt").write_text(colour)
        set_aside(tmp_path / "a.png")
    aside = tmp_path / ".excluded"
    assert (aside / "a.txt").read_text() == "red" and (aside / "a-2.txt").read_text() == "blue"
    assert Image.open(aside / "a-2.png").getpixel((0, 0)) == (0, 0, 255)
    assert not (tmp_path / "a.png").exists() and images_in(tmp_path, recursive=True) == []
