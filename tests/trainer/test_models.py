"""Base models load offline from single files (original layout) and diffusers folders; the architecture
is detected from keys and shapes; every bad file gets a message that names it and says what it is."""

import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from trainer.families.ldm_layout import save_original_checkpoint
from trainer.models.detect import inspect_base_model, inspect_file
from trainer.models.load import load_base_model
from trainer.models.tiny import build_tiny_components
from trainer.shared.errors import ModelFileError

FAMILY = {"sd15": "sd1", "sd2": "sd2", "sdxl": "sdxl"}


def _assert_same_weights(original: dict, model) -> None:
    pairs = [("unet", model.unet), ("vae", model.vae), ("text_encoder", model.text_encoders[0])]
    if "text_encoder_2" in original:
        pairs.append(("text_encoder_2", model.text_encoders[1]))
    for name, module in pairs:
        expected, got = original[name].state_dict(), module.state_dict()
        assert expected.keys() == got.keys(), name
        assert all(torch.equal(expected[k], got[k]) for k in expected), f"{name} weights differ"


@pytest.mark.parametrize("arch, fmt", [("sd15", "safetensors"), ("sd2", "safetensors"), ("sdxl", "safetensors"),
                                       ("sd15", "ckpt")])
def test_single_file_in_original_layout_loads_exactly(tmp_path, arch, fmt):
    parts = build_tiny_components(arch, seed=3)
    path = save_original_checkpoint(parts, arch, tmp_path / f"model.{fmt}", fmt=fmt)
    model = load_base_model(str(path))
    assert model.arch == FAMILY[arch]
    assert model.prediction_type == ("v_prediction" if arch == "sd2" else "epsilon")
    _assert_same_weights(parts, model)
    assert all(len(t) == 49408 for t in model.tokenizers)


def test_declared_prediction_type_wins(tmp_path):
    path = save_original_checkpoint(build_tiny_components("sd2"), "sd2", tmp_path / "m.safetensors",
                                    metadata={"modelspec.prediction_type": "epsilon"})
    info = inspect_base_model(path)
    assert (info.prediction_type, info.prediction_source) == ("epsilon", "metadata modelspec.prediction_type")
    assert load_base_model(str(path), "v_prediction").prediction_type == "v_prediction"  # config override


def test_diffusers_folder_loads(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from trainer.models.assets import load_tokenizer

    parts = build_tiny_components("sdxl", seed=5)
    StableDiffusionXLPipeline(tokenizer=load_tokenizer(), tokenizer_2=load_tokenizer(second=True),
                              **parts).save_pretrained(tmp_path / "xl")
    model = load_base_model(str(tmp_path / "xl"))
    assert model.arch == "sdxl"
    _assert_same_weights(parts, model)


def _fake_checkpoint(path, te_prefix: str, context: int, extra=None):
    tensors = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
               "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight":
                   torch.zeros(320, context),
               te_prefix + "x": torch.zeros(1), **(extra or {})}
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("te_prefix, context, arch, config", [
    ("cond_stage_model.transformer.text_model.", 768, "sd1", "sd15"),
    ("cond_stage_model.model.", 1024, "sd2", "sd2-768v"),
    ("conditioner.embedders.1.model.", 2048, "sdxl", "sdxl"),
])
def test_full_size_architectures_are_detected_from_keys_and_shapes(tmp_path, te_prefix, context, arch, config):
    info = inspect_base_model(_fake_checkpoint(tmp_path / "m.safetensors", te_prefix, context))
    assert (info.arch, info.size, info.config_name()) == (arch, "full", config)


def test_v_pred_key_marks_v_prediction(tmp_path):
    path = _fake_checkpoint(tmp_path / "m.safetensors", "cond_stage_model.transformer.", 768,
                            {"v_pred": torch.zeros(0)})
    assert inspect_base_model(path).prediction_type == "v_prediction"


def _expect_refusal(path, *words):
    with pytest.raises(ModelFileError) as err:
        load_base_model(str(path))
    assert str(path) in err.value.message
    for word in words:
        assert word in str(err.value)
    assert err.value.hint


def test_bad_files_are_named_and_explained(tmp_path):
    good = save_original_checkpoint(build_tiny_components("sd15"), "sd15", tmp_path / "good.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    _expect_refusal(tmp_path / "empty.safetensors", "empty")
    (tmp_path / "half.safetensors").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _expect_refusal(tmp_path / "half.safetensors", "truncated")
    (tmp_path / "page.safetensors").write_text("<!DOCTYPE html><html>Sign in to download</html>" * 20)
    _expect_refusal(tmp_path / "page.safetensors", "web page", "download it again")
    (tmp_path / "notes.ckpt").write_text("just some text, not a checkpoint at all")
    _expect_refusal(tmp_path / "notes.ckpt", "not a PyTorch checkpoint")
    _expect_refusal(tmp_path / "missing.safetensors", "not found")
    (tmp_path / "folder").mkdir()
    _expect_refusal(tmp_path / "folder", "model_index.json")


def test_lora_and_vae_files_are_refused_as_base_models(tmp_path):
    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4)}, str(lora))
    _expect_refusal(lora, "is a LoRA adapter, not a base model")
    assert inspect_file(lora)["kind"] == "lora" and inspect_file(lora)["rank"] == 4
    vae = tmp_path / "vae.safetensors"
    save_file({"encoder.down.0.block.0.conv1.weight": torch.zeros(1), "decoder.up.0.block.0.conv1.weight":
               torch.zeros(1)}, str(vae))
    _expect_refusal(vae, "is a VAE on its own")


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_MARKER",))


def test_a_pickle_that_runs_code_is_refused_and_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "payload": _Payload()}, path)
    _expect_refusal(path, "wants to run code", ".safetensors")
    assert not (tmp_path / "PWNED_MARKER").exists()


def test_a_plain_pickle_checkpoint_is_accepted(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
                               "cond_stage_model.transformer.x": torch.zeros(1)}}, path, pickle_protocol=2)
    assert inspect_base_model(path).arch == "sd1"
    assert pickle  # the module is used by the payload class above


def test_inspect_cli_prints_architecture_and_metadata(tmp_path):
    path = save_original_checkpoint(build_tiny_components("sdxl"), "sdxl", tmp_path / "xl.safetensors",
                                    metadata={"modelspec.title": "My XL"})
    done = subprocess.run([sys.executable, "-m", "trainer", "inspect", str(path)], capture_output=True,
                          text=True)
    assert done.returncode == 0
    out = done.stdout
    assert "sdxl" in out and "base" in out and "modelspec.title: My XL" in out and "key_count" in out
    bad = subprocess.run([sys.executable, "-m", "trainer", "inspect", str(tmp_path / "nope.safetensors")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
