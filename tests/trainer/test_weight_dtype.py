"""performance.weight_dtype: frozen weights load straight into fp32 / bf16 / fp16 / fp8, training works in
each on the CPU, the adapter is the same normal adapter, and a model that cannot fit is refused up front."""

import json
import subprocess
import sys

import pytest
import torch

from tests.support.engine import run_cli
from trainer.families.ldm_layout import save_original_checkpoint
from trainer.models.load import load_base_model
from trainer.models.precision import FP8, resolve_precision
from trainer.models.tiny import build_tiny_components
from trainer.shared.errors import ConfigError, ModelFileError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.fixture(scope="module")
def tiny_sdxl_file(tmp_path_factory):
    parts = build_tiny_components("sdxl", seed=7)
    path = save_original_checkpoint(parts, "sdxl", tmp_path_factory.mktemp("m") / "xl.safetensors")
    return parts, path


def _unet_output(unet, dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=gen).to(dtype)
    hidden = torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen).to(dtype)
    added = {"text_embeds": torch.randn(1, 48, generator=gen).to(dtype), "time_ids": torch.zeros(1, 6, dtype=dtype)}
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), hidden, added_cond_kwargs=added).sample.float()


@pytest.mark.parametrize("weight_dtype", ["bf16", "fp16"])
def test_half_precision_loads_every_frozen_weight_in_that_dtype(tiny_sdxl_file, weight_dtype):
    parts, path = tiny_sdxl_file
    model = load_base_model(str(path), weight_dtype=weight_dtype)
    dtype = DTYPES[weight_dtype]
    for module in [model.unet, *model.text_encoders]:
        assert {p.dtype for p in module.parameters()} == {dtype}
    # the VAE keeps a dtype that stays finite: bf16 has fp32's range, fp16 does not
    assert model.vae.dtype == (torch.bfloat16 if weight_dtype == "bf16" else torch.float32)
    expected = parts["unet"].state_dict()
    assert all(torch.equal(v, expected[k].to(dtype)) for k, v in model.unet.state_dict().items())


def test_fp8_stores_linear_and_conv_weights_as_float8_and_computes_close_to_fp32(tiny_sdxl_file):
    parts, path = tiny_sdxl_file
    model = load_base_model(str(path), weight_dtype="fp8")
    unet = model.unet
    stored = {n: p.dtype for n, p in unet.named_parameters()}
    attention = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.parametrizations.weight.original"
    assert stored[attention] == FP8
    assert stored["conv_in.weight"] == torch.float32          # first/last layers stay exact
    assert stored["down_blocks.0.resnets.0.norm1.weight"] == torch.float32
    fp8_share = sum(p.numel() for p in unet.parameters() if p.dtype == FP8) / sum(p.numel() for p in unet.parameters())
    assert fp8_share > 0.9
    reference = _unet_output(parts["unet"], torch.float32)
    error = (_unet_output(unet, torch.float32) - reference).norm() / reference.norm()
    assert error < 0.1, f"fp8 UNet output differs from fp32 by {error:.1%}"


def _losses(events) -> list[float]:
    return [e.loss for e in events if e.type == "progress"]


def _train(tmp_path, name, weight_dtype, *extra):
    out = tmp_path / name
    code, events, err = run_cli("train", "--demo", "--out", str(out), "--events", "jsonl",
                                "--set", "schedule.max_steps=6",
                                "--set", "sampling.every_n_steps=0", "--set", "saving.every_n_steps=0",
                                "--set", f"performance.weight_dtype={weight_dtype}", *extra)
    assert code == 0, err
    return out, events


def test_fp8_training_follows_bf16_and_gives_a_normal_adapter(tmp_path):
    from safetensors import safe_open

    bf16_dir, bf16_events = _train(tmp_path, "bf16", "bf16")
    fp8_dir, fp8_events = _train(tmp_path, "fp8", "fp8")
    bf16, fp8 = _losses(bf16_events), _losses(fp8_events)
    assert len(bf16) == len(fp8) == 6
    # Same seed, data and noise: only the frozen weights' precision differs. Stated tolerance: every step's
    # loss within 10 % of the bf16 run's (fp8 e4m3 keeps ~2 significant digits of each weight).
    assert all(abs(a - b) <= 0.1 * abs(b) for a, b in zip(fp8, bf16)), (fp8, bf16)
    files = [next(d.glob("*.safetensors")) for d in (bf16_dir, fp8_dir)]
    handles = [safe_open(str(f), "pt") for f in files]
    assert set(handles[0].keys()) == set(handles[1].keys())
    assert handles[1].metadata()["ss_network_dim"] == handles[0].metadata()["ss_network_dim"]
    for key in handles[1].keys():
        tensor = handles[1].get_tensor(key)
        assert tensor.dtype == torch.float16 and torch.isfinite(tensor).all(), key
    for file in files:  # export verification: every tensor applies to a module of the base model
        shown = subprocess.run([sys.executable, "-m", "trainer", "inspect", str(file), "--json"],
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0 and "none ignored" in json.loads(shown.stdout)["verification"], shown.stderr


def test_fp16_frozen_weights_train_sdxl_with_previews(tmp_path):
    out, events = _train(tmp_path, "xl", "fp16", "--set", "model.path=demo:sdxl", "--set", "sampling.every_n_steps=6")
    assert all(torch.isfinite(torch.tensor(_losses(events))))
    assert len(list((out / "samples").glob("*.png"))) >= 1  # the fp32 VAE decodes the fp16 UNet's latents


def test_auto_is_fp32_on_the_cpu_and_bf16_is_refused_where_the_gpu_lacks_it(monkeypatch):
    assert resolve_precision("auto", "cpu").name == "fp32"
    assert resolve_precision("fp8", "cpu").compute == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda").name == "fp16"
    with pytest.raises(ConfigError, match="performance.weight_dtype") as info:
        resolve_precision("bf16", "cuda")
    assert "fp16" in info.value.hint


def test_a_model_too_big_for_free_ram_is_refused_before_loading_with_a_dtype_that_fits(tiny_sdxl_file, monkeypatch):
    from trainer.models import memory

    _, path = tiny_sdxl_file
    need_bf16 = memory.weights_bytes(memory.tensor_shapes(path), "bf16") + memory.PROCESS_BASE
    monkeypatch.setattr(memory, "available_ram", lambda: need_bf16 + 1024)
    with pytest.raises(ModelFileError, match="GB of RAM") as info:
        load_base_model(str(path), weight_dtype="fp32")
    assert str(path) in info.value.message and 'weight_dtype = "bf16"' in info.value.hint
    assert load_base_model(str(path), weight_dtype="bf16").unet.dtype == torch.bfloat16


def test_any_transformers_model_streams_from_sharded_files(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    from trainer.models.precision import Precision
    from trainer.models.streaming import TensorFile, load_component

    config = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                            vocab_size=1000, max_position_embeddings=77)
    original = CLIPTextModel(config)
    original.save_pretrained(tmp_path, max_shard_size="20KB")
    index = tmp_path / "model.safetensors.index.json"
    assert len(set(json.loads(index.read_text())["weight_map"].values())) > 1
    source = TensorFile.open(index)
    loaded = load_component(lambda: CLIPTextModel(config), source, source.keys(), None,
                            Precision("bf16", torch.bfloat16).dtype_for, "text encoder")
    expected = original.state_dict()
    assert all(torch.equal(v, expected[k].to(torch.bfloat16)) for k, v in loaded.state_dict().items()
               if v.is_floating_point())


def test_with_previews_off_the_encoders_are_unloaded_and_a_sample_request_says_why(tmp_path, dataset_dir):
    from tests.support.engine import RecordingSink, tiny_config
    from trainer.run.control import Control
    from trainer.run.loop import train
    from trainer.shared import config as config_mod

    cfg = tiny_config(dataset_dir, schedule__max_steps=2, sampling__every_n_steps=0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config_mod.save(cfg, run_dir / "config.toml")
    control = Control()
    control.request("sample")  # the GUI's "sample now" while previews are off
    sink = RecordingSink(control)
    train(cfg, run_dir, sink, control)
    warnings = [e.message for e in sink.of_type("warning")]
    assert any("text encoders and VAE were unloaded" in m for m in warnings), warnings
    assert not (run_dir / "samples").exists() or not list((run_dir / "samples").glob("*.png"))
    assert sink.of_type("done")


def test_fp8_training_step_keeps_no_upcast_copies_and_gives_the_same_gradients():
    from trainer.lora.algorithms import peft_config
    from trainer.lora.inject import inject
    from trainer.models import precision
    from trainer.shared import config as config_mod

    model = load_base_model("demo:sdxl", weight_dtype="fp8")
    lora = config_mod.TrainConfig().lora
    lora.rank, lora.alpha = 4, 4.0
    params = inject(model.unet, peft_config(lora, model.family.lora.denoiser["attention+ff"]))
    for p in params:
        p.data = p.data.float()
        torch.nn.init.normal_(p, std=0.1)  # B starts at zero: give every LoRA matrix a gradient
    grads, alive = [], []
    for keep_fp8 in (False, True):
        model.unet.zero_grad()
        with precision.fp8_saved_weights(keep_fp8):
            out = _unet_output_with_grad(model.unet)
        alive.append(len(precision._UPCASTS))  # upcast copies the backward still holds on to
        out.square().mean().backward()
        grads.append([p.grad.clone() for p in params])
    assert alive[0] > 20 and alive[1] == 0
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def _unet_output_with_grad(unet) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=gen)
    hidden = torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen)
    added = {"text_embeds": torch.randn(1, 48, generator=gen), "time_ids": torch.zeros(1, 6)}
    return unet(sample, torch.tensor([500]), hidden, added_cond_kwargs=added).sample
