"""`lora-studio merge` for Z-Image and FLUX.2 klein: the LoRA is baked into the single file users keep, in its
own layout (fused `attention.qkv` / `img_attn.qkv` rows), and the merged file loads as base + LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support.conformance import _trained_network, single_file
from tests.support.engine import make_dataset, tiny_config, train_in_process
from tests.support.loras import our_lora
from tests.trainer.test_bake import _expected_weights
from trainer.families.registry import get
from trainer.models.load import load_base_model
from trainer.models.safe_load import read_tensor_index
from trainer.shared.errors import UserError
from trainer.tryit.bake import bake_checkpoint
from trainer.tryit.loras import LoraSpec

FUSED = {"zimage": "attention.to_q", "flux2-klein": "attn.to_q"}  # a piece of a fused original weight


@pytest.fixture(scope="module", params=["zimage", "flux2-klein"])
def base_file(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp(request.param)
    return single_file(get(request.param), folder)[0]


@pytest.fixture(scope="module")
def trained(base_file, tmp_path_factory):
    """(a LoRA trained 2 steps on the base, {diffusers parameter: (base + scale·B·A in float64, its fp32
    rounding bound)} from the network the engine trained)."""
    folder = tmp_path_factory.mktemp("run")
    cfg = tiny_config(make_dataset(folder / "data", count=2), model__path=str(base_file), schedule__max_steps=2,
                      dataset__max_token_length=32, optimizer__lr=5e-2, saving__dtype="fp32", saving__every_n_steps=1,
                      lora__targets="full")
    adapter, _ = train_in_process(cfg, folder / "run")
    expected = {k.replace(".base_layer", ""): v
                for k, v in _expected_weights(_trained_network(cfg, base_file, folder / "run").unet).items()}
    return adapter, expected


def _check_merge(base_file: Path, adapter: Path, dtype: str, expected: dict) -> None:
    """Merge, then: the base's keys and dtypes; every adapted weight within `expected`'s bounds; every other
    weight bit for bit the base's."""
    merged = base_file.parent / f"merged-{base_file.name}"  # beside the base: the loader finds its other files
    result = bake_checkpoint(str(base_file), [LoraSpec(adapter, 1.0)], merged, dtype=dtype, overwrite=True)
    base_index, merged_index = read_tensor_index(base_file), read_tensor_index(merged)
    assert {k: v[:2] for k, v in merged_index.items()} == {k: v[:2] for k, v in base_index.items()}
    got = load_base_model(str(merged)).unet.state_dict()
    base = load_base_model(str(base_file)).unet.state_dict()
    for key, tensor in got.items():
        if key in expected:
            want, bound = expected[key]
            assert ((tensor.double() - want).abs() <= bound).all(), key
        else:
            assert torch.equal(tensor, base[key]), f"{key} changed, though no LoRA module targets it"
    assert 0 < result["changed"] <= len(expected)


def test_merged_file_is_base_plus_lora_in_the_original_layout(base_file, trained):
    """Every adapted weight (q/k/v in their rows of the fused weight included) is base + scale·B·A within fp32
    rounding; every other weight is bit for bit the base's; the file has the base's keys and dtypes."""
    adapter, expected = trained
    family = load_base_model(str(base_file)).family
    assert any(FUSED[family.id] in k for k in expected), "the run trained no piece of a fused weight"
    _check_merge(base_file, adapter, "fp32", expected)


def test_a_bf16_file_stays_bf16_within_its_rounding(base_file, trained, tmp_path):
    """The file as most users have it (bf16), merged with --dtype bf16: bf16 keys and dtypes, untouched weights
    bit for bit, adapted ones base + scale·B·A within bf16's rounding of the fp32 sum."""
    adapter, expected32 = trained
    for other in base_file.parent.glob("*.safetensors"):
        if other != base_file and not other.name.startswith("merged-"):
            (tmp_path / other.name).symlink_to(other)
    bf16 = tmp_path / base_file.name
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load_file(str(base_file)).items()},
              str(bf16))
    base32 = load_base_model(str(base_file)).unet.state_dict()
    base16 = load_base_model(str(bf16)).unet.state_dict()
    expected = {}
    for key, (want32, bound32) in expected32.items():
        want = want32 - base32[key].double() + base16[key].double()  # the same update on the bf16 weights
        # the fp32 terms as before (twice: |bf16 weight| <= (1 + 2^-8)|fp32 weight|), then bf16's rounding of
        # the fp32 sum: half a unit in its 8-bit significand, 2^-8 of the value
        expected[key] = (want, 2 * bound32 + 2.0 ** -8 * (want.abs() + 2 * bound32))
    _check_merge(bf16, adapter, "bf16", expected)
    assert {v[0] for k, v in read_tensor_index(bf16.parent / f"merged-{bf16.name}").items()} <= {"BF16", "I64",
                                                                                                 "I32"}


def test_loras_of_other_families_are_refused_by_name(base_file, tmp_path):
    family = get("zimage" if "z_image" in base_file.name else "flux2-klein")
    sd = our_lora(tmp_path / "sd.safetensors")
    with pytest.raises(UserError, match=f"is a LoRA for SD 1.x, the base model is {family.label}"):
        bake_checkpoint(str(base_file), [LoraSpec(sd)], tmp_path / "out.safetensors")
    flux = tmp_path / "flux.safetensors"
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.zeros(96, 4)}, str(flux),
              metadata={"ss_base_model_version": "flux1"})
    with pytest.raises(UserError, match=f"is a LoRA for FLUX.1, the base model is {family.label}"):
        bake_checkpoint(str(base_file), [LoraSpec(flux)], tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
