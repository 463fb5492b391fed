"""LoHa and LoKr (lora.algorithm): trained through the CLI, exported in the LyCORIS layout the UIs load,
verified, and the exported file means exactly what was trained by each UI's own formula."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.support.engine import make_dataset, run_cli, tiny_config
from tests.support.ui_formulas import invokeai_token_vector_length, modules_of, ui_delta, ui_deltas
from trainer.export.kohya import kohya_module_name, to_kohya
from trainer.export.verify import context_dim, module_table, verify_file
from trainer.families.ldm_layout import save_original_checkpoint
from trainer.families.registry import by_config
from trainer.lora.algorithms import ADAPTER, module_scales
from trainer.lora.inject import adapter_state_dict
from trainer.models.load import load_base_model
from trainer.models.tiny import build_tiny_components

FIRST_PART = {"loha": "hada_w1_a", "lokr": "lokr_w1"}


def _random_adapter(cfg):
    """The tiny model with the configured adapter, its factors all random (as after training)."""
    from trainer.run.runtime import add_adapters

    model = load_base_model(cfg.model.path)
    base = {k: v.clone() for k, v in model.unet.state_dict().items()}
    params, _ = add_adapters(cfg, model)
    torch.manual_seed(0)
    for p in params:
        p.data = torch.randn_like(p) * 0.1
    return model, base


@pytest.mark.parametrize("algorithm,options", [
    ("lora", {}), ("loha", {}), ("lokr", {}), ("lokr", {"lora__rank": 2}),
    ("lora", {"lora__rslora": True, "lora__conv_rank": 2, "lora__conv_alpha": 3.0}),
    ("loha", {"lora__conv_rank": 2, "lora__conv_alpha": 1.0}), ("lokr", {"lora__lokr_factor": 4}),
    ("lora", {"lora__block_ranks": [2, 3, 5], "lora__block_alphas": [1.0, 4.0, 2.5], "lora__conv_rank": 6}),
    ("loha", {"lora__block_ranks": [2, 3, 5]})])
def test_exported_tensors_give_the_trained_update_in_every_ui(tmp_path, algorithm, options):
    # alpha != rank, so a wrong scale anywhere (LoKr's whole factors, rsLoRA, conv alphas) shows; LoKr at rank
    # 2 or with factor 4 keeps W2 decomposed where InvokeAI's probe does not look, whole where it does
    cfg = tiny_config(tmp_path, **{"lora__algorithm": algorithm, "lora__targets": "full", "lora__rank": 4,
                                   "lora__alpha": 2.0, **options})
    model, base = _random_adapter(cfg)
    tensors = to_kohya({"unet": adapter_state_dict(model.unet)}, "sd1", dict(model.unet.config),
                       {"unet": module_scales(model.unet)}, torch.float32)
    modules = modules_of(tensors)
    checked = 0
    for module in module_scales(model.unet):
        layer = model.unet.get_submodule(module)
        weight_shape = base[module + ".weight"].shape
        expected = layer.get_delta_weight(ADAPTER).float()
        for ui, got in ui_deltas(modules[kohya_module_name("unet", module, "sd1", None)], weight_shape).items():
            assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), (module, ui)
        checked += 1
    assert checked == len(modules) and any(".conv1" in m for m in module_scales(model.unet))
    if algorithm == "lokr" and options:
        assert any("lokr_w2_a" in parts for parts in modules.values())  # the variant keeps some W2 decomposed


@pytest.mark.parametrize("algorithm,spec", [("loha", "demo:sd15"), ("loha", "demo:sdxl"), ("lokr", "demo:sd15"),
                                            ("lokr", "demo:sdxl"), ("loha", "sd15.safetensors"),
                                            ("lokr", "sd15.safetensors")])
def test_lycoris_adapter_trains_exports_and_verifies(tmp_path, algorithm, spec):
    out = tmp_path / "run"
    make_dataset(tmp_path / "data", count=4)
    if spec.endswith(".safetensors"):  # a single file in the original (A1111/civitai) layout
        spec = str(save_original_checkpoint(build_tiny_components("sd15"), "sd15", tmp_path / spec))
    # rank 2: training keeps LoKr's W2 decomposed (below half its side) as at the usual ranks of real models
    code, events, stderr = run_cli(
        "train", "--demo", "--out", str(out), "--events", "jsonl", "--set", f"model.path={spec}",
        "--set", f"dataset.path={tmp_path / 'data'}", "--set", f"lora.algorithm={algorithm}",
        "--set", "lora.targets=full", "--set", "lora.train_text_encoder=true", "--set", "schedule.max_steps=2",
        "--set", "lora.rank=2", "--set", "sampling.every_n_steps=0", "--set", "saving.every_n_steps=0",
        "--set", "optimizer.lr=1e-2")
    assert code == 0, stderr
    adapter = out / "demo-lora.safetensors"
    tensors = load_file(str(adapter))
    with safe_open(str(adapter), "pt") as f:
        meta = f.metadata()
    modules = modules_of(tensors)
    _every_ui_applies_the_same_update(tensors, meta)
    assert all(FIRST_PART[algorithm] in parts and "alpha" in parts for parts in modules.values())
    assert any(m.startswith("lora_te2_") for m in modules) == (spec == "demo:sdxl")
    assert any("resnets" in m or "in_layers" in m for m in modules)  # conv layers, targets = "full"
    # training moved the factor that starts at zero (LoHa's W2b, LoKr's W1): the adapter is not a no-op
    # (checked on the UNet: a text encoder's last layer gets no gradient, its output is skipped)
    zero_start = "hada_w2_b" if algorithm == "loha" else "lokr_w1"
    assert all(parts[zero_start].abs().sum() > 0 for m, parts in modules.items() if m.startswith("lora_unet_"))
    report = verify_file(adapter)
    assert report.ok and report.applied == len(tensors), report.summary()
    assert meta["ss_network_module"] == "lycoris.kohya"
    assert json.loads(meta["ss_network_args"])["algo"] == algorithm

    done = _cli("export", str(adapter), "--to", str(tmp_path / "ui"))
    assert done.returncode == 0 and "none ignored" in done.stdout, done.stderr
    refused = _cli("export", str(adapter), "--format", "diffusers", "--to", str(tmp_path / "d"))
    assert refused.returncode == 2 and "LyCORIS" in refused.stderr and "kohya-layout" in refused.stderr


def _every_ui_applies_the_same_update(tensors: dict, meta: dict) -> None:
    """Each module means the same update in A1111, Forge, ComfyUI and InvokeAI, and InvokeAI's probe reads the
    width of the model's text embedding (the tiny model's stands for 768 / 2048: test_invokeai_probe.py)."""
    config = meta["lora_studio_base_config"]
    table = module_table(config, by_config(config).id)
    for name, parts in modules_of(tensors).items():
        deltas = list(ui_deltas(parts, table[name].shape).values())
        assert all(torch.equal(deltas[0], other) for other in deltas[1:]), name
    shapes = {key: tuple(t.shape) for key, t in tensors.items()}  # in file order, as InvokeAI reads them
    assert invokeai_token_vector_length(shapes) == context_dim(config, by_config(config).id)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, timeout=120)


def test_dora_is_refused_for_loha(tmp_path):
    from trainer.shared.errors import ConfigError

    with pytest.raises(ConfigError, match="lora.dora"):
        tiny_config(tmp_path, lora__algorithm="loha", lora__dora=True)


def _one_step(root, name, *sets):
    """One optimizer step on the tiny model (rank 16, alpha 4, LoCon), fp32 file: {module: {part: tensor}}."""
    out = root / name
    args = ["train", "--demo", "--out", str(out), "--events", "jsonl", "--set", f"dataset.path={root / 'data'}",
            "--set", "lora.targets=full", "--set", "lora.rank=16", "--set", "lora.alpha=4", "--set",
            "schedule.max_steps=1", "--set", "sampling.every_n_steps=0", "--set", "saving.dtype=fp32"]
    code, _, stderr = run_cli(*args, *[a for s in sets for a in ("--set", s)])
    assert code == 0, stderr
    path = out / "demo-lora.safetensors"
    assert verify_file(path).ok  # every variant still exports a file the UIs load completely
    with safe_open(str(path), "pt") as f:
        return modules_of(load_file(str(path))), f.metadata()


@pytest.fixture(scope="module")
def one_step(tmp_path_factory):
    """The reference run (plain LoRA), shared, and a function to run a variant on the same data."""
    root = tmp_path_factory.mktemp("one-step")
    make_dataset(root / "data", count=4)
    return _one_step(root, "plain")[0], lambda name, *sets: _one_step(root, name, *sets)


def test_rslora_scales_by_sqrt_rank_and_conv_layers_take_their_own_rank(one_step):
    plain, run = one_step
    rs, meta = run("rs", "lora.rslora=true", "lora.conv_rank=2", "lora.conv_alpha=1")
    linear = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    shortcut_or_time = "lora_unet_down_blocks_0_resnets_0_time_emb_proj"  # 1x1/linear: the linear rank
    # after one Adam step B is the same in both runs (sign of the gradient times lr, A unchanged), so the
    # update a UI applies differs exactly by the scale: 4/sqrt(16) against 4/16
    shape = (plain[linear]["lora_up.weight"].shape[0], plain[linear]["lora_down.weight"].shape[1])
    ratio = ui_delta(rs[linear], shape).norm() / ui_delta(plain[linear], shape).norm()
    assert ratio == pytest.approx(4.0, rel=1e-3)
    assert float(rs[linear]["alpha"]) == 16.0 and meta["ss_network_alpha"] == "16.0"  # 4 * sqrt(16)
    assert rs[conv]["lora_down.weight"].shape[0] == 2 and float(rs[conv]["alpha"]) == pytest.approx(2 ** 0.5)
    assert rs[shortcut_or_time]["lora_down.weight"].shape[0] == 16
    args = json.loads(meta["ss_network_args"])
    assert args["conv_dim"] == "2" and args["rs_lora"] == "True"


def test_rslora_on_sdxl_exports_the_stabilised_alpha_and_verifies(tmp_path):
    make_dataset(tmp_path / "data", count=4)
    out = tmp_path / "run"
    code, _, stderr = run_cli(
        "train", "--demo", "--out", str(out), "--events", "jsonl", "--set", "model.path=demo:sdxl",
        "--set", f"dataset.path={tmp_path / 'data'}", "--set", "lora.rslora=true", "--set", "lora.rank=16",
        "--set", "lora.alpha=4", "--set", "lora.train_text_encoder=true", "--set", "schedule.max_steps=1",
        "--set", "sampling.every_n_steps=0", "--set", "saving.every_n_steps=0")
    assert code == 0, stderr
    adapter = out / "demo-lora.safetensors"
    report = verify_file(adapter)
    assert report.ok and report.applied == len(load_file(str(adapter))), report.summary()
    modules = modules_of(load_file(str(adapter)))
    assert any(m.startswith("lora_te2_") for m in modules)
    assert {float(parts["alpha"]) for parts in modules.values()} == {16.0}  # 4 * sqrt(16): UIs scale alpha/rank


def test_conv_rank_without_conv_targets_is_refused(tmp_path):
    from trainer.shared.errors import ConfigError

    with pytest.raises(ConfigError, match="lora.conv_rank") as err:
        tiny_config(tmp_path, lora__conv_rank=8)
    assert "full" in err.value.hint


def test_loraplus_moves_the_b_matrices_ratio_times_faster(one_step):
    plain, run = one_step
    plus, _ = run("plus", "optimizer.loraplus_ratio=4")
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    # one Adam step moves each weight by about lr * sign(gradient): B (zero at the start) by 4x as much
    # with LoRA+, A (whose gradient is zero while B is) not at all in either run
    up_ratio = plus[module]["lora_up.weight"].abs().sum() / plain[module]["lora_up.weight"].abs().sum()
    assert up_ratio == pytest.approx(4.0, rel=1e-3)
    assert torch.equal(plus[module]["lora_down.weight"], plain[module]["lora_down.weight"])
