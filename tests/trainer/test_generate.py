"""`lora-studio generate` on the tiny model: seeds, strengths, LoRAs of every layout, wrong-model refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.engine import REPO
from tests.support.loras import kohya_tensors, our_lora, write_lora
from tests.support.weights import assert_same_updates, components, lora_updates
from trainer.export.convert import kohya_to_diffusers
from trainer.shared.errors import UserError
from trainer.shared.generate_params import Request, split_lora_tags
from trainer.tryit.loras import LoraSpec


@pytest.fixture(scope="module")
def generator():
    from trainer.tryit.engine import Generator, load_base

    return Generator(load_base("demo:sd15"))


def pixels(generator, tmp_path, loras=(), seed=7, prompt="a red square", name="img") -> np.ndarray:
    req = Request(prompt=prompt, seed=seed, steps=3, loras=list(loras), out=str(tmp_path), name=name)
    image = generator.generate(req)[0]
    return np.asarray(Image.open(image.path).convert("RGB")).astype(int)


def lora(path, weight=1.0, te_weight=None) -> dict:
    return {"path": str(path), "weight": weight, "te_weight": te_weight}


def test_same_seed_same_image_and_strength_zero_is_the_base(generator, tmp_path):
    a = our_lora(tmp_path / "a.safetensors")
    base = pixels(generator, tmp_path, name="base")
    assert np.array_equal(base, pixels(generator, tmp_path, name="again"))
    assert not np.array_equal(base, pixels(generator, tmp_path, seed=8, name="seed8"))
    assert np.array_equal(base, pixels(generator, tmp_path, [lora(a, 0.0)], name="zero"))
    on = pixels(generator, tmp_path, [lora(a, 1.0)], name="on")
    assert np.abs(on - base).max() > 20
    # switching back off gives the base again: the base weights were never touched
    assert np.array_equal(base, pixels(generator, tmp_path, name="off"))


def test_text_encoder_strength_is_separate(generator, tmp_path):
    a = our_lora(tmp_path / "a.safetensors")
    full = pixels(generator, tmp_path, [lora(a, 1.0)], name="full")
    unet_only = pixels(generator, tmp_path, [lora(a, 1.0, 0.0)], name="unet")
    assert not np.array_equal(full, unet_only)


def test_foreign_kohya_locon_and_diffusers_files_apply_fully(generator, tmp_path):
    tensors = kohya_tensors(conv=True, seed=3)   # kohya names, LoCon convs, fp32, no metadata of ours
    tensors.update({k: torch.tensor(3.0) for k in tensors if k.endswith(".alpha")})  # alpha 3 of rank 4
    kohya = write_lora(tmp_path / "civitai_style.safetensors", tensors, {"ss_network_module": "networks.lora"})
    peft = write_lora(tmp_path / "pytorch_lora_weights.safetensors",
                      kohya_to_diffusers(tensors, {"lora_studio_base_config": "tiny-sd15"}))
    from_kohya = pixels(generator, tmp_path, [lora(kohya)], name="kohya")
    from_peft = pixels(generator, tmp_path, [lora(peft)], name="peft")
    names = {Path(key[0]).name: name for key, name in generator.adapters.loaded.items()}
    models = components(generator.pipe)
    kohya_updates = lora_updates(models, names[kohya.name])
    assert any(".conv1" in n for n in kohya_updates)   # LoCon convolutions applied, not only attention
    # the scale alpha/rank applied at run time and folded into lora_B give the same update in every module
    assert_same_updates(lora_updates(models, names[peft.name]), kohya_updates)
    # and, coarsely, the same image: denoising steps amplify the last bits by amounts that vary by CPU
    effect = np.abs(from_kohya - pixels(generator, tmp_path, name="b")).mean()
    assert effect > 2 and np.abs(from_kohya - from_peft).mean() < effect / 4


def test_wrong_architecture_is_refused_with_the_reason(generator, tmp_path):
    sdxl = our_lora(tmp_path / "xl.safetensors", config="tiny-sdxl", arch="sdxl")
    with pytest.raises(UserError, match="LoRA for SDXL, the base model is SD 1.x"):
        pixels(generator, tmp_path, [lora(sdxl)])
    # no metadata to go by: the key names tell (SDXL's two text encoders)
    bare = write_lora(tmp_path / "bare_xl.safetensors", kohya_tensors("tiny-sdxl", "sdxl"))
    with pytest.raises(UserError, match="LoRA for SDXL"):
        pixels(generator, tmp_path, [lora(bare)])
    # right names, wrong sizes (a bigger model of the same family): the shapes tell, naming the key
    tensors = kohya_tensors()
    key = next(k for k in tensors if k.endswith("attn2_to_k.lora_down.weight"))
    tensors[key] = torch.zeros(4, tensors[key].shape[1] * 2)
    wrong = write_lora(tmp_path / "big.safetensors", tensors)
    with pytest.raises(UserError, match=r"does not fit this base model: 1 tensors would be ignored, e.g. unet\."
                                        r"down_blocks.*attn2\.to_k: lora_down \(4, \d+\)"):
        pixels(generator, tmp_path, [lora(wrong)])


def test_lyco_loha_is_refused_by_name(generator, tmp_path):
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_a"
    loha = write_lora(tmp_path / "loha.safetensors", {key: torch.zeros(4, 4)})
    with pytest.raises(UserError, match="LoHa"):
        pixels(generator, tmp_path, [lora(loha)])


def test_prompt_tags_choose_loras_and_weights():
    clean, tags = split_lora_tags("a cat, <lora:style:0.6> on a mat <lora:char:te=0.2:unet=0.9>")
    assert clean == "a cat, on a mat"
    assert tags == [("style", 0.6, None), ("char", 0.9, 0.2)]


def test_cli_writes_pngs_with_a1111_parameters(tmp_path):
    a = our_lora(tmp_path / "mystyle.safetensors")
    proc = subprocess.run([sys.executable, "-m", "trainer", "generate", "--model", "demo:sd15", "--lora",
                           f"{a}:0.8", "--prompt", "a cat", "--negative", "blurry", "--seed", "42", "--steps", "3",
                           "--count", "2", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=REPO, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == 2   # one path per image on stdout, for scripts
    first, second = sorted((tmp_path / "out").glob("*.png"))
    text = Image.open(first).text["parameters"]
    assert text.startswith("a cat <lora:mystyle:0.8>\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a")
    assert "Seed: 42" in text and 'Lora hashes: "mystyle: ' in text
    assert "Seed: 43" in Image.open(second).text["parameters"]


def test_lora_arguments_read_weights_after_the_path():
    from pathlib import Path

    from trainer.tryit.loras import parse_lora_arg

    assert parse_lora_arg("a.safetensors") == LoraSpec(Path("a.safetensors"), 1.0, None)
    assert parse_lora_arg("dir/a.safetensors:0.8:0.5") == LoraSpec(Path("dir/a.safetensors"), 0.8, 0.5)
    assert parse_lora_arg(r"C:\loras\a.safetensors:0.7").path == Path(r"C:\loras\a.safetensors")
