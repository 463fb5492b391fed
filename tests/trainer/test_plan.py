"""`lora-studio plan`: predicted memory, each figure checked against one measured apart from the plan: the
adapter training builds, the bytes the loaded model holds, the optimizer's state after a step, what autograd
keeps for the backward with and without gradient checkpointing."""

import json
import subprocess
import sys

import pytest
import torch

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


def _param_bytes(module: torch.nn.Module, rest: torch.dtype | None = None) -> int:
    """Bytes of a loaded module's weights as held; with `rest`, what is not fp8 counted in that dtype."""
    return sum(p.numel() * (p.element_size() if rest is None or p.dtype == torch.float8_e4m3fn
                            else rest.itemsize) for p in module.parameters())


@pytest.mark.parametrize("weight_dtype", ["fp32", "bf16", "fp16", "fp8"])
def test_frozen_weights_are_the_bytes_the_loaded_model_holds(sdxl_file, weight_dtype):
    from trainer.models.load import load_base_model

    plan = make_plan(_cfg(model__path=str(sdxl_file), performance__weight_dtype=weight_dtype), "cpu")
    model = load_base_model(str(sdxl_file), weight_dtype=weight_dtype)
    loaded = {"unet": model.unet, "vae": model.vae, "text_encoder": model.text_encoders[0],
              "text_encoder_2": model.text_encoders[1]}
    assert plan.frozen_gb == pytest.approx({name: _param_bytes(m) / 1e9 for name, m in loaded.items()})
    if weight_dtype == "fp8":
        # on a GPU the same layers stay 1 byte and the rest (norms, biases, embeddings) is bf16
        gpu = make_plan(_cfg(model__path=str(sdxl_file), performance__weight_dtype="fp8"), "cuda")
        for name in ("unet", "text_encoder", "text_encoder_2"):
            assert gpu.frozen_gb[name] == pytest.approx(_param_bytes(loaded[name], torch.bfloat16) / 1e9)


def _built(cfg) -> list[torch.nn.Parameter]:
    """The adapter parameters training builds for `cfg` (trainer.run.runtime.add_adapters on the loaded model)."""
    from trainer.models.load import load_base_model
    from trainer.run.runtime import add_adapters

    unet_params, te_params = add_adapters(cfg, load_base_model(cfg.model.path))
    return unet_params + te_params


@pytest.mark.parametrize("spec", ["demo:sd15", "demo:sdxl"])
@pytest.mark.parametrize("keys,exact", [
    ({}, True), ({"lora__dora": True}, True), ({"lora__algorithm": "loha"}, True),
    ({"lora__targets": "full", "lora__block_ranks": [2, 4, 8], "lora__conv_rank": 3}, True),
    # estimates kept on the safe side: LoKr's size depends on its factors, AdaLoRA holds importance scores
    ({"lora__algorithm": "lokr"}, False), ({"lora__algorithm": "lokr", "lora__lokr_factor": 4}, False),
    ({"lora__algorithm": "adalora"}, False)])
def test_lora_size_is_the_count_training_builds(spec, keys, exact):
    cfg = _cfg(model__path=spec, lora__rank=6, lora__train_text_encoder=True, **keys)
    built = sum(p.numel() for p in _built(cfg))
    planned = make_plan(cfg, "cpu").lora_params
    assert planned == built if exact else planned >= built


@pytest.mark.parametrize("spec", ["demo:flux1", "demo:zimage", "demo:flux2-klein"])
def test_dit_lora_size_is_the_count_training_builds(spec):
    """Every DiT family's plan counts what training builds (the wizard's memory line asks for it)."""
    cfg = _cfg(model__path=spec, lora__rank=6, lora__targets="full", dataset__max_token_length=32)
    assert make_plan(cfg, "cpu").lora_params == sum(p.numel() for p in _built(cfg))


@pytest.mark.parametrize("optimizer,exact", [("adamw", True), ("adafactor", False), ("prodigy", False)])
def test_adapter_memory_is_what_the_optimizer_holds_after_a_step(optimizer, exact):
    """Weights, gradients and every state tensor of the optimizer training builds, after one step: AdamW's
    two moments exactly (and a step counter per tensor), Adafactor's and Prodigy's within the plan."""
    from trainer.run.optim import build_optimizer, param_groups

    if optimizer == "prodigy":
        pytest.importorskip("prodigyopt")
    cfg = _cfg(lora__rank=6, optimizer__name=optimizer, optimizer__lr=1.0)  # (Prodigy: lr 1 in every group)
    params = _built(cfg)
    opt = build_optimizer(cfg, param_groups(cfg, params, []), torch.device("cpu"))
    for p in params:
        p.data, p.grad = p.data.float(), torch.randn_like(p.data.float())
    opt.step()
    state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    held = sum(t.numel() * t.element_size() for t in [*params, *(p.grad for p in params), *state])
    planned = make_plan(cfg, "cpu").adapter_gb * 1e9
    if exact:
        assert planned == pytest.approx(held, abs=8 * len(params))  # step counters: a few bytes per tensor
    else:
        assert planned >= held


def _saved_activation_bytes(unet: torch.nn.Module, cond: dict, batch: int = 2, side: int = 8) -> int:
    """Bytes of the tensors autograd keeps for the backward of one training forward of `unet`, weights
    excluded (counted as frozen), each storage once."""
    weights = {p.untyped_storage().data_ptr() for p in unet.parameters()}
    kept: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = unet(torch.randn(batch, 4, side, side), torch.tensor([10] * batch), **cond).sample
    out.mean().backward()
    return sum(kept.values())


@pytest.mark.parametrize("spec", ["demo:sd15", "demo:sdxl"])
def test_checkpointing_promises_no_more_than_it_saves(spec):
    """Measured on the model: what gradient checkpointing keeps for the backward against what a plain
    forward keeps. The plan may count the savings short (its figure is for the real models), never long."""
    from trainer.models.load import load_base_model
    from trainer.run.runtime import add_adapters

    cfg = _cfg(model__path=spec)
    model = load_base_model(spec)
    add_adapters(cfg, model)
    unet = model.unet.train()
    c = unet.config
    cond = {"encoder_hidden_states": torch.randn(2, 77, c.cross_attention_dim)}
    if c.addition_embed_type == "text_time":  # SDXL: pooled text and the six size/crop numbers
        pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
        cond["added_cond_kwargs"] = {"text_embeds": torch.randn(2, pooled), "time_ids": torch.randn(2, 6)}
    plain = _saved_activation_bytes(unet, cond)
    unet.enable_gradient_checkpointing()
    checkpointed = _saved_activation_bytes(unet, cond)
    assert checkpointed < plain
    planned = make_plan(cfg, "cpu"), make_plan(_cfg(model__path=spec, performance__gradient_checkpointing=True), "cpu")
    assert planned[1].activations_gb < planned[0].activations_gb
    assert planned[1].activations_gb >= planned[0].activations_gb * checkpointed / plain


def test_gpu_plan_gives_back_encoders_it_does_not_train(sdxl_file):
    base = dict(model__path=str(sdxl_file), dataset__resolution=1024, performance__weight_dtype="bf16")
    plain = make_plan(_cfg(**base), "cuda")
    assert set(plain.offloaded) == {"text_encoder", "text_encoder_2", "vae"}
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


def test_block_swap_moves_the_swapped_blocks_bytes_from_the_gpu_to_pinned_ram():
    """The swapped figure is the bytes the loaded model's last blocks hold (fp8 weights 1 byte, the rest bf16 on
    a GPU); two of them are on the GPU at a time, so the GPU figure falls by between swapped - in flight (while
    training) and swapped (while caching), and RAM holds them all."""
    from trainer.models.load import load_base_model
    from trainer.shared.errors import ConfigError

    base = dict(model__path="demo:flux1", performance__weight_dtype="fp8", performance__gradient_checkpointing=True)
    resident, swapped = (make_plan(_cfg(**base, performance__blocks_to_swap=n), "cuda") for n in (0, 3))
    unet = load_base_model("demo:flux1", weight_dtype="fp8").unet
    last = [unet.transformer_blocks[1], *unet.single_transformer_blocks]  # the last 3 of 2 + 2
    sizes = [_param_bytes(block, torch.bfloat16) for block in last]
    assert swapped.swapped_gb == pytest.approx(sum(sizes) / 1e9)
    assert swapped.in_flight_gb == pytest.approx(sum(sorted(sizes)[-2:]) / 1e9)
    fall = resident.gpu_gb - swapped.gpu_gb
    assert (sum(sizes) - sum(sorted(sizes)[-2:])) / 1e9 - 1e-12 <= fall <= sum(sizes) / 1e9 + 1e-12
    assert swapped.ram_gb >= resident.ram_gb and swapped.ram_gb * 1e9 >= sum(sizes)
    assert make_plan(_cfg(**base, performance__blocks_to_swap=3), "cpu").swapped_gb == 0  # a no-op on a CPU
    with pytest.raises(ConfigError, match=r"'performance.blocks_to_swap' is 4; this FLUX.1 transformer has 4"):
        make_plan(_cfg(**base, performance__blocks_to_swap=4), "cuda")
    with pytest.raises(ConfigError, match=r"'performance.blocks_to_swap' is 1; SD 1.x's unet is not block-swapped"):
        make_plan(_cfg(**{**base, "model__path": "demo:sd15"}, performance__blocks_to_swap=1), "cuda")
