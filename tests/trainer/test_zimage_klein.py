"""Z-Image and FLUX.2 klein beyond the conformance suite: the files users keep found where ComfyUI keeps
them, and every bad input refused by name before anything heavy loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.support.conformance import single_file
from tests.support.engine import make_dataset, tiny_config
from trainer.families.registry import get
from trainer.models.detect import inspect_base_model
from trainer.models.load import load_base_model
from trainer.shared.errors import ConfigError, ModelFileError


@pytest.fixture(scope="module")
def zimage_files(tmp_path_factory) -> Path:
    path, _ = single_file(get("zimage"), tmp_path_factory.mktemp("zimage"))
    return path


@pytest.fixture(scope="module")
def klein_files(tmp_path_factory) -> Path:
    path, _ = single_file(get("flux2-klein"), tmp_path_factory.mktemp("klein"))
    return path


def _comfyui(files: Path, tmp: Path, skip: str = "") -> Path:
    """The three files laid out in ComfyUI's models/ folders (all but SKIP); the transformer's new path."""
    folders = {"qwen": "text_encoders", "ae": "vae", "vae": "vae"}
    model = None
    for file in files.parent.glob("*.safetensors"):
        folder = next((f for k, f in folders.items() if file.name.startswith(k) or k in file.name), "diffusion_models")
        if skip and skip in file.name:
            continue
        (tmp / "models" / folder).mkdir(parents=True, exist_ok=True)
        (tmp / "models" / folder / file.name).symlink_to(file)
        model = tmp / "models" / folder / file.name if folder == "diffusion_models" else model
    return model


def test_detection_tells_the_families_and_their_kinds_apart(zimage_files, klein_files, tmp_path):
    z = inspect_base_model(zimage_files)
    assert (z.arch, z.variant, z.size) == ("zimage", "base", "tiny") and not z.extra["missing_files"]
    k = inspect_base_model(klein_files)
    assert (k.arch, k.variant) == ("flux2-klein", "4b") and k.to_dict()["family"]["native_resolution"] == 1024
    turbo = tmp_path / "z_image_turbo_bf16.safetensors"
    turbo.symlink_to(zimage_files)
    assert inspect_base_model(turbo).variant == "turbo"


@pytest.mark.parametrize("family_files, missing, role", [("zimage_files", "qwen_3_4b", "text_encoders"),
                                                         ("zimage_files", "ae.safetensors", "vae"),
                                                         ("klein_files", "flux2-vae", "vae")])
def test_comfyui_folders_are_searched_and_a_missing_file_is_named(family_files, missing, role, request, tmp_path):
    files = request.getfixturevalue(family_files)
    found = _comfyui(files, tmp_path / "all")
    assert load_base_model(str(found)).unet is not None  # everything found in models/text_encoders, models/vae
    model = _comfyui(files, tmp_path / "some", skip=missing)
    with pytest.raises(ModelFileError, match=rf"{missing}.*ComfyUI keeps it in models/{role}"):
        load_base_model(str(model))


def _header_only(path: Path, shapes: dict[str, tuple]) -> Path:
    """A file whose header has these shapes, each tensor empty (a zero-sized dimension): detection reads
    only names and shapes, so a 32 B model or an 8 B text encoder fits in a few bytes."""
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(path))
    return path


def test_qwen3_8b_given_to_a_4b_klein_is_refused_before_it_loads(klein_files, tmp_path):
    qwen8b = _header_only(tmp_path / "qwen_3_8b.safetensors", {"model.embed_tokens.weight": (0, 4096),
                                                              "model.layers.0.self_attn.q_norm.weight": (0,)})
    for file in klein_files.parent.glob("*.safetensors"):
        if "qwen" not in file.name:
            (tmp_path / file.name).symlink_to(file)
    with pytest.raises(ModelFileError, match="is Qwen3-8B, 1 layers, but FLUX.2 klein 4B reads Qwen3-4B"):
        load_base_model(str(tmp_path / klein_files.name), files={"text_encoder": str(qwen8b)})


def test_flux2_dev_files_are_refused_by_name(tmp_path):
    dev = _header_only(tmp_path / "flux2-dev.safetensors", {"single_stream_modulation.lin.weight": (0, 6144),
                                                            "img_in.weight": (6144, 0), "txt_in.weight": (0, 15360)})
    with pytest.raises(ModelFileError, match=r"FLUX.2 \[dev\] \(32 B\)"):
        inspect_base_model(dev)


def test_z_image_turbo_is_refused_for_training_naming_the_key(zimage_files, tmp_path):
    turbo = tmp_path / "z_image_turbo_bf16.safetensors"
    turbo.symlink_to(zimage_files)
    cfg = tiny_config(make_dataset(tmp_path / "data", count=1), model__path=str(turbo))
    with pytest.raises(ConfigError, match="model.training_adapter"):
        get("zimage").check_config(cfg)


def test_training_on_the_distilled_klein_warns_naming_the_base_model(klein_files, tmp_path):
    from tests.support.engine import train_in_process

    for file in klein_files.parent.glob("*.safetensors"):
        (tmp_path / file.name.replace("-base", "")).symlink_to(file)
    cfg = tiny_config(make_dataset(tmp_path / "data", count=1), model__path=str(tmp_path / "flux-2-klein-4b.safetensors"),
                      schedule__max_steps=1, dataset__max_token_length=32)
    _, sink = train_in_process(cfg, tmp_path / "run")
    assert any("flux-2-klein-base-4b.safetensors" in e.message for e in sink.of_type("warning"))


def test_qwen3_is_never_trained_and_loras_say_what_they_are_for(zimage_files, tmp_path):
    cfg = tiny_config(make_dataset(tmp_path / "data", count=1), model__path=str(zimage_files),
                      lora__train_text_encoder=True)
    with pytest.raises(ConfigError, match="lora.train_text_encoder"):
        get("zimage").check_config(cfg)
    meta = get("flux2-klein").metadata("flow", "9b")
    assert meta["modelspec.architecture"] == "flux-2-klein-9b" and "not interchangeable" in meta["lora_studio_note"]
    from trainer.families.registry import of_lora

    assert of_lora(["diffusion_model.layers.0.attention.to_q.lora_A.weight"], {}).id == "zimage"
    assert of_lora(["diffusion_model.double_blocks.0.img_mlp.0.lora_A.weight"], {}).id == "flux2-klein"
    assert of_lora(["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"], {}).id == "flux1"


@pytest.mark.parametrize("family_files", ["zimage_files", "klein_files"])
def test_generate_applies_our_lora_and_refuses_an_sd_one(family_files, request, tmp_path):
    from PIL import Image

    from tests.support.engine import train_in_process
    from tests.support.loras import our_lora
    from trainer.shared.errors import UserError
    from trainer.shared.generate_params import Request
    from trainer.tryit.engine import Generator, load_base

    files = request.getfixturevalue(family_files)
    cfg = tiny_config(make_dataset(tmp_path / "data", count=2), model__path=str(files), schedule__max_steps=2,
                      dataset__max_token_length=32, optimizer__lr=5e-2, saving__dtype="fp32", lora__targets="full")
    adapter, _ = train_in_process(cfg, tmp_path / "run")
    generator = Generator(load_base(str(files), "fp32"))
    ask = dict(prompt="tok, a shape", seed=3, steps=2, out=str(tmp_path / "out"), width=64, height=64)
    plain = generator.generate(Request(**ask, name="plain"))[0].path
    with_lora = generator.generate(Request(**ask, name="lora", loras=[{"path": str(adapter), "weight": 1.0}]))[0].path
    assert Image.open(plain).tobytes() != Image.open(with_lora).tobytes(), "the LoRA changed nothing"
    fp8 = Generator(load_base(str(files), "fp8"))  # the frozen transformer in fp8, as small GPUs keep it
    assert fp8.generate(Request(**ask, name="fp8", loras=[{"path": str(adapter), "weight": 1.0}]))[0].path.is_file()
    with pytest.raises(UserError, match="is a LoRA for SD 1.x"):
        generator.generate(Request(**ask, name="sd", loras=[{"path": str(our_lora(tmp_path / "sd.safetensors")),
                                                             "weight": 1.0}]))
