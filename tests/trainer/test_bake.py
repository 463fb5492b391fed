"""`lora-studio merge BASE LORA:W --out F`: the baked checkpoint is base + LoRA, in the original key layout."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from tests.support.engine import REPO
from tests.support.loras import our_lora
from trainer.errors import UserError
from trainer.models.original_layout import save_original_checkpoint
from trainer.models.safe_load import read_tensor_index
from trainer.models.tiny import build_tiny_components
from trainer.tryit.bake import bake_checkpoint
from trainer.tryit.loras import LoraSpec
from trainer.tryit.params import Request

# Baked in fp32, the merged weights differ from base + LoRA only by the order of float additions (UNet and
# text-encoder outputs agree to ~1e-4). The random tiny models amplify that over the denoising steps, so a
# few pixels of the 8-bit PNG may move by some levels: at most 8 of 255 anywhere, under 0.5 on average,
# while the LoRA itself moves pixels by more than 20.
PIXEL_TOLERANCE, MEAN_TOLERANCE = 8, 0.5
CONFIGS = {"sd15": ("tiny-sd15", "sd1"), "sdxl": ("tiny-sdxl", "sdxl")}


def image(model_path, tmp_path, name, loras=()) -> np.ndarray:
    from trainer.tryit.engine import Generator, load_base

    generator = Generator(load_base(str(model_path), "fp32"))
    req = Request(prompt="a green cube", seed=11, steps=2, loras=list(loras), out=str(tmp_path), name=name)
    return np.asarray(Image.open(generator.generate(req)[0].path)).astype(int)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_merged_checkpoint_gives_the_image_of_base_plus_lora(tmp_path, arch):
    config, family = CONFIGS[arch]
    base = save_original_checkpoint(build_tiny_components(arch), arch, tmp_path / "base.safetensors")
    lora = our_lora(tmp_path / "style.safetensors", config=config, arch=family, conv=True)
    result = bake_checkpoint(str(base), [LoraSpec(lora, 0.8)], tmp_path / "merged.safetensors", dtype="fp32")
    with_lora = image(base, tmp_path, "lora", [{"path": str(lora), "weight": 0.8}])
    merged = image(tmp_path / "merged.safetensors", tmp_path, "merged")
    assert np.abs(with_lora - image(base, tmp_path, "base")).max() > 20
    difference = np.abs(with_lora - merged)
    assert difference.max() <= PIXEL_TOLERANCE and difference.mean() < MEAN_TOLERANCE
    assert set(read_tensor_index(tmp_path / "merged.safetensors")) == set(read_tensor_index(base))
    assert result["changed"] > 0


def test_cli_writes_fp16_with_metadata_and_refuses_a_foreign_lora(tmp_path):
    base = save_original_checkpoint(build_tiny_components("sd15"), "sd15", tmp_path / "base.safetensors")
    lora = our_lora(tmp_path / "style.safetensors")
    out = tmp_path / "merged.safetensors"
    proc = subprocess.run([sys.executable, "-m", "trainer", "merge", str(base), f"{lora}:0.6", "--out", str(out),
                           "--json"], capture_output=True, text=True, cwd=REPO, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dtype"] == "fp16"
    index = read_tensor_index(out)
    assert index["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"][0] == "F16"
    with safe_open(str(out), "pt") as f:
        merged = json.loads(f.metadata()["lora_studio_merged"])
    assert merged[0]["file"] == "style.safetensors" and merged[0]["weight"] == 0.6
    xl = our_lora(tmp_path / "xl.safetensors", config="tiny-sdxl", arch="sdxl")
    with pytest.raises(UserError, match="LoRA for SDXL"):
        bake_checkpoint(str(base), [LoraSpec(xl)], tmp_path / "x.safetensors")
