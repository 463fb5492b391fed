"""Scaled fp8 files (an fp8 weight and the scale it was divided by: BFL's klein fp8 files, ComfyUI's scaled T5)
load as the weights they stand for, in fp8 (scale applied in every forward) or dequantised (fp32/bf16)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support.conformance import single_file
from tests.support.engine import make_dataset, tiny_config, train_in_process
from trainer.families.registry import get
from trainer.models.load import load_base_model
from trainer.models.precision import FP8

FP8_MAX = torch.finfo(FP8).max


def scaled_copy(state: dict, quantised, scale_name: str = "weight_scale") -> tuple[dict, dict]:
    """The file with every weight `quantised(key)` picks stored as fp8 / (absmax / 448) and its scale beside
    it, as the scaled files do; (the new file's state, {key: the weight it stands for, in fp32})."""
    out, meant = dict(state), {}
    for key, weight in state.items():
        if not quantised(key, weight):
            continue
        scale = weight.float().abs().max() / FP8_MAX * 4  # not 1: a loader that skips it is off by that much
        out[key] = (weight.float() / scale).to(FP8)
        out[key.removesuffix("weight") + scale_name] = scale.reshape(())
        meant[key] = out[key].float() * scale
    return out, meant


def _block_linear(key: str, weight: torch.Tensor) -> bool:
    return key.endswith(".weight") and weight.dim() == 2 and key.startswith(("double_blocks.", "single_blocks."))


def _effective(module: torch.nn.Module, name: str) -> torch.Tensor:
    return module.get_submodule(name).weight.detach().float()


@pytest.mark.parametrize("weight_dtype", ["fp32", "fp8"])
def test_a_scaled_fp8_klein_loads_the_weights_it_stands_for(tmp_path, weight_dtype):
    path, _ = single_file(get("flux2-klein"), tmp_path)
    scaled, meant = scaled_copy(load_file(str(path)), _block_linear)
    save_file(scaled, str(path))
    model = load_base_model(str(path), weight_dtype=weight_dtype)
    # the fused qkv is split into to_q/to_k/to_v: each part is its rows of the meant weight, times the scale
    qkv = meant["double_blocks.0.img_attn.qkv.weight"]
    parts = [_effective(model.unet, f"transformer_blocks.0.attn.to_{p}") for p in "qkv"]
    assert torch.equal(torch.cat(parts), qkv)
    stored = dict(model.unet.named_parameters())["transformer_blocks.0.attn.to_q.parametrizations.weight.original"
                                                 if weight_dtype == "fp8" else "transformer_blocks.0.attn.to_q.weight"]
    assert (stored.dtype == FP8) == (weight_dtype == "fp8")  # fp8: the file's own tensor, kept


def test_training_on_a_scaled_fp8_klein_keeps_the_file_as_fp8_and_runs(tmp_path):
    (tmp_path / "models").mkdir()
    path, _ = single_file(get("flux2-klein"), tmp_path / "models")
    scaled, _ = scaled_copy(load_file(str(path)), _block_linear)
    save_file(scaled, str(path))
    cfg = tiny_config(make_dataset(tmp_path / "data", count=1), model__path=str(path), schedule__max_steps=1,
                      dataset__max_token_length=32, performance__weight_dtype="fp8")
    adapter, sink = train_in_process(cfg, tmp_path / "run")
    assert Path(adapter).is_file() and sink.of_type("done")


def test_a_comfyui_scaled_fp8_t5_loads_its_weights(tmp_path):
    family = get("flux1")
    files = family.single_files(family.tiny_components(seed=2))
    for name, state in files.items():
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / name))
    t5 = load_file(str(tmp_path / "t5xxl_fp16.safetensors"))
    scaled, meant = scaled_copy(t5, lambda k, w: k.startswith("encoder.block.") and w.dim() == 2
                                and "relative_attention_bias" not in k, scale_name="scale_weight")
    scaled["scaled_fp8"] = torch.zeros(0, dtype=FP8)
    (tmp_path / "t5xxl_fp16.safetensors").unlink()
    save_file(scaled, str(tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors"))
    model = load_base_model(str(tmp_path / "flux1-dev.safetensors"), weight_dtype="fp8")
    t5_model = model.text_encoders[1]
    key = "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert torch.equal(_effective(t5_model, key.removesuffix(".weight")), meant[key])
