"""FLUX.1 beyond the conformance suite: the files users keep (found, missing, refused), T5 released before
the transformer loads, CLIP-L training in the kohya export, try-it with a FLUX LoRA."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support.engine import make_dataset, tiny_config, train_in_process
from trainer.families.registry import get
from trainer.models.detect import inspect_base_model, inspect_file
from trainer.shared.errors import ModelFileError, UserError

FLUX = get("flux1")


@pytest.fixture(scope="module")
def flux_files(tmp_path_factory) -> Path:
    """The tiny FLUX.1 dev as ComfyUI users keep it: models/diffusion_models, models/vae, models/text_encoders."""
    root = tmp_path_factory.mktemp("comfy") / "models"
    files = FLUX.single_files(FLUX.tiny_components(seed=2))
    homes = {"ae.safetensors": "vae", "clip_l.safetensors": "text_encoders",
             "t5xxl_fp16.safetensors": "text_encoders"}
    for name, state in files.items():
        folder = root / homes.get(name, "diffusion_models")
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / name))
    return root / "diffusion_models" / "flux1-dev.safetensors"


def test_comfyui_folders_are_searched_and_a_missing_file_is_named(flux_files, tmp_path):
    info = inspect_file(flux_files)
    assert info["arch"] == "flux1" and info["variant"] == "dev" and not info["missing_files"]
    assert info["files"]["vae"].endswith("models/vae/ae.safetensors")
    alone = tmp_path / "flux1-dev.safetensors"
    alone.write_bytes(flux_files.read_bytes())
    missing = inspect_file(alone)["missing_files"]
    assert [m.split(" ")[0] for m in missing] == ["ae.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors"]
    cfg = tiny_config(make_dataset(tmp_path / "data", count=1), model__path=str(alone), dataset__max_token_length=32)
    with pytest.raises(ModelFileError, match=r"clip_l\.safetensors \(model\.clip_l; ComfyUI keeps it in "
                                             r"models/text_encoders\)"):
        train_in_process(cfg, tmp_path / "run")


def test_other_flux_files_are_refused_by_name(tmp_path):
    shapes = {"double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2), "single_blocks.0.linear1.weight":
              torch.zeros(4, 2), "img_in.weight": torch.zeros(2, 384)}
    save_file(shapes, str(tmp_path / "fill.safetensors"))
    with pytest.raises(ModelFileError, match="FLUX.1 Fill"):
        inspect_base_model(tmp_path / "fill.safetensors")
    save_file({**shapes, "double_stream_modulation_img.lin.weight": torch.zeros(2, 2)},
              str(tmp_path / "flux2.safetensors"))
    with pytest.raises(ModelFileError, match="is a FLUX.2 model"):
        inspect_base_model(tmp_path / "flux2.safetensors")


def test_t5_leaves_memory_before_the_transformer_loads(flux_files, tmp_path, monkeypatch):
    from trainer.models import load

    seen = {}
    original = load.BaseModel.load_denoiser

    def spy(model, **kwargs):
        if model.pending_denoiser is not None:
            seen["t5 released"] = load.released(model.text_encoders[1])
            seen["encoded"] = len(model.encoded)
        return original(model, **kwargs)

    monkeypatch.setattr(load.BaseModel, "load_denoiser", spy)
    cfg = tiny_config(make_dataset(tmp_path / "data", count=2), model__path=str(flux_files), schedule__max_steps=1,
                      dataset__max_token_length=32, sampling__every_n_steps=1, sampling__steps=2)
    _, sink = train_in_process(cfg, tmp_path / "run")
    # 2 captions, the empty caption (also the prompts' negative), 2 preview prompts
    assert seen == {"t5 released": True, "encoded": 5} and sink.of_type("sample")


def test_clip_l_trains_into_the_kohya_file_and_the_diffusers_export_says_why_not(flux_files, tmp_path):
    from trainer.export.exporter import export_adapter
    from trainer.export.verify import verify_file

    cfg = tiny_config(make_dataset(tmp_path / "data", count=2), model__path=str(flux_files), schedule__max_steps=2,
                      dataset__max_token_length=32, lora__train_text_encoder=True, saving__dtype="fp32")
    adapter, _ = train_in_process(cfg, tmp_path / "run")
    keys = load_file(str(adapter)).keys()
    assert any(k.startswith("lora_te1_text_model_encoder_layers_") for k in keys)
    assert not any(k.startswith("lora_te2_") for k in keys), "T5 is never trained"
    assert any(k.startswith("lora_unet_double_blocks_0_img_attn_qkv.") for k in keys)
    assert verify_file(adapter).ok
    with pytest.raises(UserError, match="export it with --format kohya"):
        export_adapter(adapter, "diffusers", tmp_path / "d")


def test_generate_applies_a_flux_lora_and_refuses_an_sd_one(flux_files, tmp_path):
    from tests.support.loras import our_lora
    from trainer.shared.generate_params import Request
    from trainer.tryit.engine import Generator, load_base

    cfg = tiny_config(make_dataset(tmp_path / "data", count=2), model__path=str(flux_files), schedule__max_steps=3,
                      dataset__max_token_length=32, optimizer__lr=2e-2, saving__dtype="fp32")
    adapter, _ = train_in_process(cfg, tmp_path / "run")
    generator = Generator(load_base(str(flux_files), "fp32"))
    request = dict(prompt="tok, a shape", seed=3, steps=2, out=str(tmp_path / "out"))
    plain = generator.generate(Request(**request, name="plain"))[0].path
    with_lora = generator.generate(Request(**request, name="lora", loras=[{"path": str(adapter), "weight": 1.0}]))
    from PIL import Image

    difference = (torch.tensor(list(Image.open(plain).getdata())) -
                  torch.tensor(list(Image.open(with_lora[0].path).getdata()))).abs().sum()
    assert difference > 0, "the LoRA changed nothing"
    sd = our_lora(tmp_path / "sd15.safetensors")
    with pytest.raises(UserError, match="is a LoRA for SD 1.x, the base model is FLUX.1"):
        generator.generate(Request(**request, name="sd", loras=[{"path": str(sd), "weight": 1.0}]))
    # the frozen transformer in fp8 (what 12-16 GB cards use): the LoRA applies there too
    fp8 = Generator(load_base(str(flux_files), "fp8"))
    assert fp8.generate(Request(**request, name="fp8", loras=[{"path": str(adapter), "weight": 1.0}]))[0].path.is_file()


def test_conformance_single_files_are_the_four_users_keep():
    names = list(FLUX.single_files(FLUX.tiny_components()))
    assert names == ["flux1-dev.safetensors", "ae.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors"]


def test_merge_bakes_a_flux_lora_into_the_bfl_transformer_file(flux_files, tmp_path):
    """merged = base + scale·up·down for every adapted layer, each fused q/k/v part in its own rows."""
    from tests.support.conformance import _trained_network
    from tests.trainer.test_bake import _expected_weights
    from trainer.models.load import load_base_model
    from trainer.tryit.bake import bake_checkpoint
    from trainer.tryit.loras import LoraSpec

    cfg = tiny_config(make_dataset(tmp_path / "data", count=2), model__path=str(flux_files), schedule__max_steps=2,
                      dataset__max_token_length=32, optimizer__lr=2e-2, saving__dtype="fp32", saving__every_n_steps=1,
                      lora__targets="attention+ff")
    adapter, _ = train_in_process(cfg, tmp_path / "run")
    merged = flux_files.parent / "merged-flux1-dev.safetensors"
    result = bake_checkpoint(str(flux_files), [LoraSpec(adapter, 1.0)], merged, dtype="fp32", overwrite=True)
    assert result["changed"] > 0 and set(load_file(str(merged))) == set(load_file(str(flux_files)))
    expected = {k.replace(".base_layer", ""): v
                for k, v in _expected_weights(_trained_network(cfg, flux_files, tmp_path / "run").unet).items()}
    got = load_base_model(str(merged)).unet.state_dict()
    assert expected and all(((got[k].double() - want).abs() <= bound).all() for k, (want, bound) in expected.items())


def test_schnell_is_detected_and_training_on_it_warns(tmp_path):
    from safetensors.torch import save_file as write

    for name, state in FLUX.single_files(FLUX.tiny_components(variant="schnell"), "schnell").items():
        write({k: v.contiguous() for k, v in state.items()}, str(tmp_path / name))
    model = tmp_path / "flux1-schnell.safetensors"
    info = inspect_file(model)
    assert info["variant"] == "schnell" and info["family"]["default_tokens"] == 256
    cfg = tiny_config(make_dataset(tmp_path / "data", count=1), model__path=str(model), schedule__max_steps=1,
                      dataset__max_token_length=32)
    _, sink = train_in_process(cfg, tmp_path / "run")
    assert any("schnell is timestep-distilled" in w.message for w in sink.of_type("warning"))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "demo-lora.safetensors"), "pt") as f:
        assert f.metadata()["modelspec.architecture"] == "flux-1-schnell/lora"
