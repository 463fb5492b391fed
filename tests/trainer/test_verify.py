"""Every tensor of a trained adapter maps onto a module of its architecture; strays are reported."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support.engine import tiny_config, train_in_process
from trainer.export.verify import verify_file


@pytest.mark.parametrize("spec", ["demo:sd15", "demo:sdxl"])
def test_trained_adapter_maps_completely(tmp_path, dataset_dir, spec):
    cfg = tiny_config(dataset_dir, model__path=spec, lora__targets="full", lora__train_text_encoder=True,
                      schedule__max_steps=1)
    adapter, _ = train_in_process(cfg, tmp_path / "run")
    report = verify_file(adapter)
    assert report.ok and report.applied == len(load_file(str(adapter)))


def test_misnamed_and_misshaped_tensors_are_reported(tmp_path, dataset_dir):
    adapter, _ = train_in_process(tiny_config(dataset_dir, schedule__max_steps=1), tmp_path / "run")
    tensors = load_file(str(adapter))
    key = next(k for k in tensors if k.endswith("lora_down.weight"))
    tensors["lora_unet_no_such_block.lora_down.weight"] = torch.zeros(4, 8)
    tensors[key] = torch.zeros(4, 3)
    from safetensors import safe_open

    with safe_open(str(adapter), "pt") as f:
        meta = f.metadata()
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    report = verify_file(bad)
    assert not report.ok and len(report.ignored) == 2
    assert any("no module 'lora_unet_no_such_block'" in r for r in report.ignored)
    assert any("does not fit" in r for r in report.ignored)
    out = subprocess.run([sys.executable, "-m", "trainer", "inspect", str(bad)], capture_output=True, text=True)
    assert "2 IGNORED" in out.stdout and "lora" in out.stdout
