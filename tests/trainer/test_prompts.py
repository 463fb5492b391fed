"""Per-prompt preview settings in kohya's syntax: parsed, validated with the config, and used by previews."""

import json

import pytest
from PIL import Image

from tests.support.engine import make_dataset, run_cli
from trainer.shared.config import SamplingConfig
from trainer.shared.errors import ConfigError
from trainer.shared.prompts import join_prompt, parse_prompt, split_prompt


def test_kohya_options_override_the_sampling_defaults():
    sampling = SamplingConfig(negative_prompt="lowres", steps=20, guidance_scale=7.0, seed=100)
    s = parse_prompt("a cat, on a sofa --n blurry, bad hands --w 770 --h 512 --s 28 --l 6.5 --d 7", sampling, 512, 3)
    assert (s.prompt, s.negative, s.width, s.height, s.steps, s.guidance_scale, s.seed) == \
        ("a cat, on a sofa", "blurry, bad hands", 768, 512, 28, 6.5, 7)  # width rounded down to 8 pixels
    plain = parse_prompt("a dog", sampling, 512, 3)
    assert (plain.negative, plain.width, plain.steps, plain.seed) == ("lowres", 512, 20, 103)
    text = "a cat, on a sofa --n blurry, bad hands --w 768 --s 28"
    assert split_prompt(text) == ("a cat, on a sofa", {"n": "blurry, bad hands", "w": "768", "s": "28"})
    assert join_prompt(*split_prompt(text)) == text
    assert join_prompt("a dog", {"n": "", "w": " "}) == "a dog"  # empty fields take the defaults


def test_a_bad_option_is_a_config_error_naming_the_key():
    from trainer.shared import config as config_mod

    with pytest.raises(ConfigError, match="sampling.prompts"):
        config_mod.from_dict({"sampling": {"prompts": ["a cat --w wide"]}})


def test_previews_use_each_prompts_own_settings(tmp_path):
    make_dataset(tmp_path / "data", count=2)
    prompts = json.dumps(["a red circle --w 96 --h 64 --s 3 --l 5 --d 11 --n green", "a square"])
    code, events, stderr = run_cli(
        "train", "--demo", "--out", str(tmp_path / "run"), "--events", "jsonl",
        "--set", f"dataset.path={tmp_path / 'data'}", "--set", "schedule.max_steps=1",
        "--set", "sampling.every_n_steps=5", "--set", "saving.every_n_steps=0", "--set", "sampling.steps=2",
        "--set", f"sampling.prompts={prompts}")
    assert code == 0, stderr
    first, second = [e for e in events if e.type == "sample"]
    assert first.prompt == "a red circle" and first.seed == 11
    image = Image.open(first.path)
    assert image.size == (96, 64)
    assert "Negative prompt: green\nSteps: 3, Sampler: Euler a, CFG scale: 5.0, Seed: 11, Size: 96x64" in \
        image.text["parameters"]
    assert Image.open(second.path).size == (64, 64) and "Steps: 2," in Image.open(second.path).text["parameters"]


def test_steps_and_cfg_left_at_zero_come_from_the_model():
    sampling = SamplingConfig()  # steps 0, guidance 0: the model's own
    flux_dev = parse_prompt("a dog", sampling, 512, 0, own=(20, 3.5))
    assert (flux_dev.steps, flux_dev.guidance_scale) == (20, 3.5)
    mine = parse_prompt("a dog --s 9 --l 2", SamplingConfig(steps=30, guidance_scale=5.0), 512, 0, own=(4, 1.0))
    assert (mine.steps, mine.guidance_scale) == (9, 2.0)  # the prompt's options, then the config, then the model
    assert (parse_prompt("a dog", SamplingConfig(steps=30), 512, 0, own=(4, 1.0)).steps) == 30


@pytest.mark.parametrize("model, settings", [("demo:sd15", "Steps: 20, Sampler: Euler a, CFG scale: 7"),
                                             ("demo:flux1", "Steps: 20, Sampler: Euler a, CFG scale: 3.5"),
                                             ("demo:flux2-klein", "Steps: 4, Sampler: Euler a, CFG scale: 1"),
                                             ("demo:zimage", "Steps: 28, Sampler: Euler a, CFG scale: 4")])
def test_generate_samples_each_model_as_it_is_made_to_be_sampled_by_default(tmp_path, model, settings):
    """SD at CFG 7, FLUX.1 dev at its distilled guidance 3.5, the distilled klein in 4 steps without CFG, Z-Image
    Base with CFG: a FLUX.1 image at SD's CFG 7 comes out burnt, a klein one at 20 steps wastes 5x the time.
    (Every family's demo model loads by its demo: name too.)"""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "trainer", "generate", "--model", model, "--prompt", "a cat",
                           "--seed", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    (image,) = tmp_path.glob("*.png")
    assert settings in Image.open(image).text["parameters"]
