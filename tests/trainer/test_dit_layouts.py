"""The DiT families' other file layouts: Z-Image and FLUX.2 klein from a diffusers folder (as the Hub ships
them: model_index.json, transformer/, vae/, text_encoder/ with `model.`-prefixed Qwen3 names, scheduler/), and
ComfyUI's all-in-one FLUX.1 checkpoint (transformer, AE and both text encoders in one file): every weight
loads as saved, and it trains."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.support.engine import make_dataset, tiny_config, train_in_process
from trainer.families.registry import get
from trainer.models.detect import inspect_base_model
from trainer.models.load import load_base_model


def diffusers_folder(family, folder: Path) -> tuple[Path, dict]:
    """The family's tiny model saved as a diffusers folder named like the Hub's; (folder, components)."""
    parts = family.tiny_components(seed=3)
    shutil.copytree(family.config_folder(family.config_name("flow", tiny=True)), folder)
    files = {"transformer": parts["unet"].state_dict(), "vae": parts["vae"].state_dict(),
             "text_encoder": {f"model.{k}": v for k, v in parts["text_encoder"].state_dict().items()}}
    for name, state in files.items():
        save_file({k: v.contiguous() for k, v in state.items()},
                  str(folder / name / ("model.safetensors" if name == "text_encoder"
                                       else "diffusion_pytorch_model.safetensors")))
    return folder, parts


@pytest.mark.parametrize("family_id, name", [("zimage", "Z-Image"), ("flux2-klein", "FLUX.2-klein-base-4B")])
def test_a_diffusers_folder_loads_every_weight_as_saved(family_id, name, tmp_path):
    family = get(family_id)
    folder, parts = diffusers_folder(family, tmp_path / name)
    info = inspect_base_model(folder)
    assert (info.family, info.format, info.size) == (family, "diffusers", "tiny")
    model = load_base_model(str(folder))
    for loaded, saved in ((model.unet, parts["unet"]), (model.vae, parts["vae"]),
                          (model.text_encoders[0], parts["text_encoder"])):
        want = saved.state_dict()
        got = loaded.state_dict()
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want)


def test_training_from_a_klein_folder_runs_to_the_end(tmp_path):
    folder, _ = diffusers_folder(get("flux2-klein"), tmp_path / "FLUX.2-klein-base-4B")
    cfg = tiny_config(make_dataset(tmp_path / "data", count=1), model__path=str(folder), schedule__max_steps=1,
                      dataset__max_token_length=32)
    adapter, sink = train_in_process(cfg, tmp_path / "run")
    assert Path(adapter).is_file() and sink.of_type("done")


def test_a_comfyui_all_in_one_flux_checkpoint_loads_all_four_parts_from_the_one_file(tmp_path):
    family = get("flux1")
    files = family.single_files(family.tiny_components(seed=4))
    prefixes = {"flux1-dev.safetensors": "model.diffusion_model.", "ae.safetensors": "vae.",
                "clip_l.safetensors": "text_encoders.clip_l.transformer.",
                "t5xxl_fp16.safetensors": "text_encoders.t5xxl.transformer."}
    (tmp_path / "split").mkdir()
    everything = {}
    for name, state in files.items():
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "split" / name))
        everything.update({prefixes[name] + k: v.contiguous() for k, v in state.items()})
    aio = tmp_path / "checkpoints" / "flux1-dev-fp8.safetensors"
    aio.parent.mkdir()
    save_file(everything, str(aio))
    info = inspect_base_model(aio)
    assert info.family is family and not info.extra["missing_files"]
    split, whole = load_base_model(str(tmp_path / "split" / "flux1-dev.safetensors")), load_base_model(str(aio))
    for a, b in ((split.unet, whole.unet), (split.vae, whole.vae), *zip(split.text_encoders, whole.text_encoders)):
        want, got = a.state_dict(), b.state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
