"""`lora-studio plan`: predicted memory from exact parameter counts, and the choices that move it."""

import json
import subprocess
import sys

import pytest

from tests.support.engine import REPO, _env
from trainer.commands.plan import make_plan
from trainer.families.ldm_layout import save_original_checkpoint
from trainer.models.tiny import build_tiny_components
from trainer.shared import config as config_mod


def _cfg(**keys) -> config_mod.TrainConfig:
    cfg = config_mod.TrainConfig()
    for key, value in keys.items():
        config_mod.set_key(cfg, key.replace("__", "."), value)
    return cfg


@pytest.fixture(scope="module")
def sdxl_file(tmp_path_factory):
    parts = build_tiny_components("sdxl", seed=1)
    return save_original_checkpoint(parts, "sdxl", tmp_path_factory.mktemp("p") / "xl.safetensors")


def test_frozen_weights_follow_weight_dtype_exactly(sdxl_file):
    parts = build_tiny_components("sdxl", seed=1)
    params = {name: sum(p.numel() for p in parts[name].parameters()) for name in ("unet", "text_encoder_2")}
    fp32 = make_plan(_cfg(model__path=str(sdxl_file), performance__weight_dtype="fp32"), "cpu")
    bf16 = make_plan(_cfg(model__path=str(sdxl_file), performance__weight_dtype="bf16"), "cpu")
    fp8 = make_plan(_cfg(model__path=str(sdxl_file), performance__weight_dtype="fp8"), "cuda")
    assert fp32.frozen_gb["unet"] == pytest.approx(params["unet"] * 4 / 1e9)
    assert bf16.frozen_gb["text_encoder_2"] == pytest.approx(params["text_encoder_2"] * 2 / 1e9)
    # fp8: linear/conv weights 1 byte, the rest (norms, biases, embeddings, first/last layer) in bf16
    assert params["unet"] / 1e9 < fp8.frozen_gb["unet"] < bf16.frozen_gb["unet"]
    assert fp8.frozen_gb["vae"] == bf16.frozen_gb["vae"]  # the VAE never goes below bf16
    assert fp32.ram_gb > bf16.ram_gb > fp8.frozen_gb["unet"]


def test_lora_size_counts_the_targeted_layers_and_optimizer_state():
    attention = make_plan(_cfg(lora__rank=8, lora__targets="attention"), "cpu")
    full = make_plan(_cfg(lora__rank=8, lora__targets="full"), "cpu")
    rank16 = make_plan(_cfg(lora__rank=16, lora__targets="attention"), "cpu")
    assert rank16.lora_params == 2 * attention.lora_params and full.lora_params > attention.lora_params
    assert attention.adapter_gb == pytest.approx(attention.lora_params * 4 * 4 / 1e9)  # AdamW: w, grad, 2 states


def test_gpu_plan_gives_back_encoders_and_checkpointing_cuts_activations(sdxl_file):
    base = dict(model__path=str(sdxl_file), dataset__resolution=1024, performance__weight_dtype="bf16")
    plain = make_plan(_cfg(**base), "cuda")
    checkpointed = make_plan(_cfg(**base, performance__gradient_checkpointing=True), "cuda")
    assert set(plain.offloaded) == {"text_encoder", "text_encoder_2", "vae"}
    assert checkpointed.activations_gb < plain.activations_gb / 4
    trained_te = make_plan(_cfg(**base, lora__train_text_encoder=True), "cuda")
    assert "text_encoder" not in trained_te.offloaded


def test_plan_warns_when_the_gpu_has_too_little_free_memory(sdxl_file):
    facts = {"gpus": [{"free_gb": 0.001, "total_gb": 8}], "ram": {"available_gb": 64}}
    plan = make_plan(_cfg(model__path=str(sdxl_file)), "cuda", facts)
    assert any("GB of GPU memory" in w and "gradient checkpointing" in w for w in plan.warnings)


def test_plan_cli_prints_json_and_names_a_missing_model(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "trainer", "plan", *a], capture_output=True,  # noqa: E731
                                    text=True, cwd=REPO, env=_env(), timeout=120)
    ok = run("--demo", "--device", "cuda", "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["device"] == "cuda" and data["gpu_gb"] > 0 and "GB GPU" in data["summary"]
    missing = run("--demo", "--set", f"model.path={tmp_path / 'none.safetensors'}")
    assert missing.returncode == 2 and "none.safetensors" in missing.stderr


@pytest.mark.parametrize("keys", [{}, {"lora__targets": "full", "lora__block_ranks": [2, 4, 8]},
                                  {"lora__targets": "full", "lora__block_ranks": [2, 4, 8], "lora__conv_rank": 3}])
def test_lora_size_is_the_count_training_builds_with_per_block_and_conv_ranks(keys):
    from trainer.models.load import load_base_model
    from trainer.run.runtime import add_adapters

    cfg = _cfg(lora__rank=6, **keys)
    unet_params, _ = add_adapters(cfg, load_base_model(cfg.model.path))
    assert make_plan(cfg, "cpu").lora_params == sum(p.numel() for p in unet_params)
