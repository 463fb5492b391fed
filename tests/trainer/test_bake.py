"""`lora-studio merge BASE LORA:W --out F`: the baked checkpoint is base + LoRA, in the original key layout."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from tests.support.engine import REPO
from tests.support.loras import our_lora
from trainer.families.ldm_layout import save_original_checkpoint
from trainer.models.safe_load import read_tensor_index
from trainer.models.tiny import build_tiny_components
from trainer.shared.errors import UserError
from trainer.shared.generate_params import Request
from trainer.tryit.bake import bake_checkpoint
from trainer.tryit.loras import LoraSpec

CONFIGS = {"sd15": ("tiny-sd15", "sd1"), "sdxl": ("tiny-sdxl", "sdxl")}
EPS32 = float(np.finfo(np.float32).eps)


def image(model_path, tmp_path, name, loras=()) -> np.ndarray:
    from trainer.tryit.engine import Generator, load_base

    generator = Generator(load_base(str(model_path), "fp32"))
    req = Request(prompt="a green cube", seed=11, steps=2, loras=list(loras), out=str(tmp_path), name=name)
    return np.asarray(Image.open(generator.generate(req)[0].path)).astype(int)


def _expected_weights(model) -> dict:
    """{parameter name in the plain model: (W + scale·B·A in float64, the bound of fp32 rounding)} for every layer
    the generation path put a peft LoRA layer on: the merge's contract, computed from the modules `generate`
    applies (not from the bake's mapping into the single-file layout)."""
    out = {}
    for name, module in model.named_modules():
        if not len(getattr(module, "lora_A", ())):
            continue
        adapter = next(iter(module.lora_A))
        w = module.base_layer.weight.detach().double()
        a, b = module.lora_A[adapter].weight.detach().double(), module.lora_B[adapter].weight.detach().double()
        scale = module.scaling[adapter]
        delta = (b.flatten(1) @ a.flatten(1)).reshape(w.shape) * scale
        magnitude = (b.flatten(1).abs() @ a.flatten(1).abs()).reshape(w.shape) * abs(scale)
        # fp32: each product-sum of rank r rounds by at most r·eps of its magnitude, the addition and the cast
        # by eps each of theirs
        bound = (a.shape[0] + 2) * EPS32 * (w.abs() + magnitude) + EPS32 * (w + delta).abs()
        out[f"{name}.weight"] = (w + delta, bound)
    return out


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_merged_checkpoint_is_base_plus_lora_weight_by_weight(tmp_path, arch):
    from trainer.models.load import load_base_model

    config, family = CONFIGS[arch]
    base = save_original_checkpoint(build_tiny_components(arch), arch, tmp_path / "base.safetensors")
    lora = our_lora(tmp_path / "style.safetensors", config=config, arch=family, conv=True)
    result = bake_checkpoint(str(base), [LoraSpec(lora, 0.8)], tmp_path / "merged.safetensors", dtype="fp32")
    from trainer.tryit.adapters import Adapters

    reference = load_base_model(str(base))
    Adapters(reference.family.preview_pipeline(reference, reference.noise_scheduler), reference.arch) \
        .activate([LoraSpec(lora, 0.8)])
    merged = load_base_model(str(tmp_path / "merged.safetensors"))
    changed = 0
    for ours, theirs in zip([merged.unet, *merged.text_encoders], [reference.unet, *reference.text_encoders]):
        expected = {k.replace(".base_layer", ""): v for k, v in _expected_weights(theirs).items()}
        plain = {k.replace(".base_layer", ""): v for k, v in theirs.state_dict().items() if "lora_" not in k}
        for key, tensor in ours.state_dict().items():
            if key in expected:
                want, bound = expected[key]
                assert ((tensor.double() - want).abs() <= bound).all(), key
                changed += 1
            else:
                assert torch.equal(tensor, plain[key]), f"{key} changed, though no LoRA module targets it"
    in_file = sum(1 for key in read_tensor_index(lora) if key.endswith("lora_down.weight"))
    # every module of the file, each checked; OpenCLIP's q/k/v share one fused tensor of the single file
    assert changed == in_file and changed >= result["changed"] > 0
    assert set(read_tensor_index(tmp_path / "merged.safetensors")) == set(read_tensor_index(base))


def test_merged_checkpoint_gives_about_the_image_of_base_plus_lora(tmp_path):
    """A coarse end-to-end look: the merged model's image is far closer to base + LoRA than the base is
    (pixel-exact agreement is not expected: random tiny models amplify float-order differences, which vary
    by CPU, over the denoising steps)."""
    base = save_original_checkpoint(build_tiny_components("sd15"), "sd15", tmp_path / "base.safetensors")
    lora = our_lora(tmp_path / "style.safetensors", conv=True)
    bake_checkpoint(str(base), [LoraSpec(lora, 0.8)], tmp_path / "merged.safetensors", dtype="fp32")
    with_lora = image(base, tmp_path, "lora", [{"path": str(lora), "weight": 0.8}])
    effect = np.abs(with_lora - image(base, tmp_path, "base")).mean()
    assert effect > 2
    assert np.abs(with_lora - image(tmp_path / "merged.safetensors", tmp_path, "merged")).mean() < effect / 4


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
