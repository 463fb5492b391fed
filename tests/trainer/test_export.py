"""Export: verified files in both layouts, placed where each UI looks, with sidecar and preview;
the diffusers layout and a rank-resized adapter reproduce the trained network in diffusers."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from tests.support.engine import make_dataset, tiny_config, train_in_process
from tests.support.weights import assert_same_updates, components, lora_updates
from trainer.export.exporter import export_adapter
from trainer.export.resizer import resize_file
from trainer.models.load import load_base_model
from trainer.shared.errors import UserError

UI_LAYOUTS = {
    "a1111": (["webui.py"], [], "models/Lora"),
    "forge": (["webui-user.sh"], ["modules_forge"], "models/Lora"),
    "comfyui": (["main.py"], ["comfy"], "models/loras"),
    "invokeai": (["invokeai.yaml"], [], "lora-studio"),
    "folder": ([], [], ""),
}


@pytest.fixture(scope="module", params=["demo:sd15", "demo:sdxl"])
def trained(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param.replace(":", "-"))
    cfg = tiny_config(make_dataset(root / "data"), model__path=request.param, lora__targets="full",
                      lora__train_text_encoder=True, schedule__max_steps=4, optimizer__lr=5e-3,
                      sampling__every_n_steps=4, sampling__steps=2, saving__dtype="fp32",
                      saving__trigger_phrase="zkx person")
    adapter, _ = train_in_process(cfg, root / "run")
    return request.param, adapter


def _pipe(spec, lora_path=None):
    from tests.trainer.test_lora_file import _pipeline

    pipe = _pipeline(load_base_model(spec))
    if lora_path is not None:
        pipe.load_lora_weights(str(lora_path))
    return pipe


def _pipe_latents(spec, lora_path=None):
    from tests.trainer.test_lora_file import _latents

    return _latents(_pipe(spec, lora_path))


def test_kohya_and_diffusers_exports_reproduce_the_adapter(trained, tmp_path):
    from tests.trainer.test_lora_file import _latents

    spec, adapter = trained
    kohya = export_adapter(adapter, "kohya", tmp_path / "k", name="mine")
    diffusers = export_adapter(adapter, "diffusers", tmp_path / "d", name="mine")
    assert kohya.adapter.name == "mine.safetensors" and "none ignored" in kohya.report
    assert diffusers.adapter.name == "pytorch_lora_weights.safetensors"
    original = _pipe(spec, adapter)
    updates = lora_updates(components(original))
    base, original = _pipe_latents(spec), _latents(original)
    effect = (original - base).abs().max()
    assert effect > 1e-2
    for exported in (kohya.adapter, diffusers.adapter):  # (the diffusers layout folds alpha into lora_B)
        pipe = _pipe(spec, exported)
        assert_same_updates(lora_updates(components(pipe)), updates)
        assert (_latents(pipe) - original).abs().max() < effect / 4  # and, coarsely, the same output


def test_metadata_files_the_lora_under_the_right_version(trained, tmp_path):
    spec, adapter = trained
    result = export_adapter(adapter, "kohya", tmp_path, name="card")
    with safe_open(str(result.adapter), "pt") as f:
        meta = f.metadata()
    if spec == "demo:sdxl":
        assert meta["ss_base_model_version"].startswith("sdxl_")
        assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    else:
        assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["ss_output_name"] == "card" == meta["modelspec.title"]
    assert meta["modelspec.trigger_phrase"] == "zkx person"
    assert meta["modelspec.thumbnail"].startswith("data:image/jpeg;base64,")
    assert json.loads(meta["ss_tag_frequency"])["data"]["tok"] == 6
    for key in ("ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args",
                "ss_num_train_images", "ss_resolution", "ss_steps", "ss_learning_rate", "ss_training_started_at",
                "modelspec.sai_model_spec", "modelspec.implementation", "modelspec.resolution",
                "modelspec.date", "modelspec.prediction_type", "lora_studio_config"):
        assert meta[key], key


@pytest.mark.parametrize("ui", sorted(UI_LAYOUTS))
def test_files_land_where_each_ui_looks(trained, tmp_path, ui):
    _, adapter = trained
    files, folders, lora_dir = UI_LAYOUTS[ui]
    root = tmp_path / "install"
    for folder in folders:
        (root / folder).mkdir(parents=True)
    root.mkdir(exist_ok=True)
    for file in files:
        (root / file).write_text("")
    result = export_adapter(adapter, "kohya", root, name="zkx")
    assert result.ui.ui == ui
    assert result.adapter == root / lora_dir / "zkx.safetensors"
    assert (root / lora_dir / "zkx.preview.png").exists()
    sidecar = root / lora_dir / "zkx.json"
    assert sidecar.exists() == (ui in ("a1111", "forge", "folder"))
    if sidecar.exists():
        card = json.loads(sidecar.read_text())
        assert card["activation text"] == "zkx person" and card["preferred weight"] == 1.0
        assert card["sd version"] in ("SD1", "SDXL")


def test_comfyui_portable_folder_is_recognised(trained, tmp_path):
    _, adapter = trained
    (tmp_path / "ComfyUI" / "comfy").mkdir(parents=True)
    (tmp_path / "ComfyUI" / "main.py").write_text("")
    result = export_adapter(adapter, "kohya", tmp_path, name="p")
    assert result.adapter == tmp_path / "ComfyUI" / "models" / "loras" / "p.safetensors"


def test_existing_files_are_never_overwritten_without_asking(trained, tmp_path):
    _, adapter = trained
    first = export_adapter(adapter, "kohya", tmp_path, name="same")
    before = first.adapter.read_bytes()
    with pytest.raises(UserError, match="already exists"):
        export_adapter(adapter, "kohya", tmp_path, name="same")
    assert first.adapter.read_bytes() == before
    export_adapter(adapter, "kohya", tmp_path, name="same", overwrite=True)


def test_resized_adapter_stays_close(trained, tmp_path):
    spec, adapter = trained
    out, energy = resize_file(adapter, 2, tmp_path / "r2.safetensors")
    assert 0 < min(energy.values()) <= 1.0 and sum(energy.values()) / len(energy) > 0.5
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["ss_network_dim"] == "2"
        assert f.get_tensor(next(k for k in f.keys() if k.endswith("lora_down.weight"))).shape[0] == 2
    base, original, resized = _pipe_latents(spec), _pipe_latents(spec, adapter), _pipe_latents(spec, out)
    effect = (original - base).abs().max()
    assert (resized - original).abs().max() < 0.5 * effect


def test_export_cli_reports_verification_and_next_step(trained, tmp_path):
    _, adapter = trained
    (tmp_path / "webui.py").write_text("")
    out = subprocess.run([sys.executable, "-m", "trainer", "export", str(adapter), "--to", str(tmp_path),
                          "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["ui"] == "a1111" and "none ignored" in data["verification"]
    again = subprocess.run([sys.executable, "-m", "trainer", "export", str(adapter), "--to", str(tmp_path)],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_dora_scale_gives_the_trained_weights_by_the_uis_formula(tmp_path):
    """ComfyUI/LyCORIS apply dora_scale as W' = m * (W + s*up@down) / ||W + s*up@down|| per output row;
    that must equal the weight peft's DoRA layer computes."""
    from safetensors.torch import load_file

    from trainer.lora.inject import load_adapter_state_dict
    from trainer.run.runtime import add_adapters
    from trainer.run.state import latest_snapshot, load_state

    cfg = tiny_config(make_dataset(tmp_path / "d"), lora__dora=True, schedule__max_steps=3,
                      optimizer__lr=1e-2, saving__dtype="fp32")
    adapter, _ = train_in_process(cfg, tmp_path / "run")
    model = load_base_model("demo:sd15")
    base = {k: v.clone() for k, v in model.unet.state_dict().items()}
    add_adapters(cfg, model)
    load_adapter_state_dict(model.unet, load_state(latest_snapshot(tmp_path / "run")).adapters["unet"])
    tensors = load_file(str(adapter))
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    name = "lora_unet_" + module.replace(".", "_")
    weight = base[module + ".weight"]
    scale = float(tensors[name + ".alpha"]) / tensors[name + ".lora_down.weight"].shape[0]
    combined = weight + scale * tensors[name + ".lora_up.weight"] @ tensors[name + ".lora_down.weight"]
    ui_weight = tensors[name + ".dora_scale"] * combined / combined.norm(dim=1, keepdim=True)
    layer = model.unet.get_submodule(module)
    layer.merge()
    assert torch.allclose(layer.base_layer.weight, ui_weight, atol=1e-5)
