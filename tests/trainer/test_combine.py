"""`lora-studio merge --loras`: combining LoRAs exactly, or resized by SVD with the energy reported."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.support.engine import REPO
from tests.support.loras import our_lora
from trainer.export.convert import group_modules, scale_of
from trainer.export.verify import verify_file
from trainer.shared.errors import UserError
from trainer.shared.generate_params import Request
from trainer.tryit.combine import combine_files
from trainer.tryit.loras import LoraSpec

EPS16 = float(torch.finfo(torch.float16).eps)
TINY16 = float(torch.finfo(torch.float16).smallest_normal) * EPS16  # fp16's subnormal spacing


def test_combined_file_equals_the_weighted_pair(tmp_path):
    from trainer.tryit.engine import Generator, load_base

    a, b = our_lora(tmp_path / "a.safetensors", seed=1), our_lora(tmp_path / "b.safetensors", seed=2)
    result = combine_files([LoraSpec(a, 0.5), LoraSpec(b, 0.5)], tmp_path / "c.safetensors")
    c = group_modules(load_file(str(tmp_path / "c.safetensors")))
    pair = [group_modules(load_file(str(a))), group_modules(load_file(str(b)))]
    assert c.keys() == pair[0].keys() == pair[1].keys()
    for module, parts in c.items():
        # one LoRA of rank 4 + 4: the downs stacked as they are, the ups side by side, each scaled by its
        # weight x alpha/rank and rounded once to the file's fp16 (half a unit in the last place)
        ins = [p[module] for p in pair]
        assert torch.equal(parts["lora_down.weight"], torch.cat([p["lora_down.weight"] for p in ins]))
        up = torch.cat([p["lora_up.weight"].double() * 0.5 * scale_of(p) for p in ins], 1)
        bound = EPS16 / 2 * up.abs() + TINY16 / 2
        assert ((parts["lora_up.weight"].double() - up).abs() <= bound).all(), module
        assert scale_of(parts) == 1.0
    assert result["rank"] == 8 and verify_file(tmp_path / "c.safetensors").ok

    generator = Generator(load_base("demo:sd15"))

    def image(loras, name):
        req = Request(prompt="a cat", seed=3, steps=3, loras=loras, out=str(tmp_path), name=name)
        return np.asarray(Image.open(generator.generate(req)[0].path)).astype(int)

    # a coarse look at the images: the combined file's is far closer to the pair's than the base's is (not
    # pixel-exact: the sums are grouped differently, and denoising steps amplify that by amounts that vary
    # by CPU)
    pair = image([{"path": str(a), "weight": 0.5}, {"path": str(b), "weight": 0.5}], "pair")
    combined = image([{"path": str(tmp_path / "c.safetensors"), "weight": 1.0}], "combined")
    effect = np.abs(pair - image([], "base")).mean()
    assert effect > 2 and np.abs(pair - combined).mean() < effect / 4


def test_cli_rank_reports_retained_energy(tmp_path):
    a, b = our_lora(tmp_path / "a.safetensors", seed=1), our_lora(tmp_path / "b.safetensors", seed=2)
    out = tmp_path / "ab-r4.safetensors"
    proc = subprocess.run([sys.executable, "-m", "trainer", "merge", "--loras", f"{a}:0.7", f"{b}:0.5",
                           "--rank", "4", "--out", str(out), "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["rank"] == 4 and 0.3 < report["min_energy"] <= report["mean_energy"] < 1.0
    assert {t.shape[0] for k, t in load_file(str(out)).items() if k.endswith("lora_down.weight")} == {4}
    assert verify_file(out).ok


def test_loras_of_different_models_are_refused(tmp_path):
    a = our_lora(tmp_path / "a.safetensors")
    xl = our_lora(tmp_path / "xl.safetensors", config="tiny-sdxl", arch="sdxl")
    with pytest.raises(UserError, match="different models"):
        combine_files([LoraSpec(a), LoraSpec(xl)], tmp_path / "c.safetensors")
