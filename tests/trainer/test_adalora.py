"""AdaLoRA (lora.algorithm = "adalora"): the budget moves during training, the export is a plain kohya LoRA
with per-module ranks that every UI loads, and a resume continues the allocation exactly."""

import pytest
import torch
from safetensors.torch import load_file

from tests.support.engine import make_dataset
from tests.support.runs import adapter_metadata, train_verified
from tests.support.ui_formulas import modules_of

# --- AdaLoRA ----------------------------------------------------------------------------------------------

def test_adalora_export_folds_pruned_triplets_into_the_trained_update(tmp_path):
    from tests.support.engine import tiny_config
    from tests.support.ui_formulas import ui_delta
    from trainer.export.kohya import kohya_module_name, to_kohya
    from trainer.lora.algorithms import ADAPTER, module_scales
    from trainer.lora.inject import adapter_state_dict
    from trainer.models.load import load_base_model
    from trainer.run.runtime import add_adapters

    cfg = tiny_config(tmp_path, lora__algorithm="adalora", lora__rank=2, lora__alpha=3.0,
                      lora__targets="attention+ff")
    model = load_base_model(cfg.model.path)
    params, _ = add_adapters(cfg, model)
    torch.manual_seed(0)
    for p in params:
        p.data = torch.randn_like(p) * 0.1
    for name, p in model.unet.named_parameters():  # prune as the allocator does: some E entries to zero
        if ".lora_E." in name:
            p.data[torch.rand(p.shape) < 0.5] = 0
    tensors = to_kohya({"unet": adapter_state_dict(model.unet)}, "sd1", dict(model.unet.config),
                       {"unet": module_scales(model.unet)}, torch.float32)
    modules = modules_of(tensors)
    ranks = set()
    for module in module_scales(model.unet):
        layer = model.unet.get_submodule(module)
        name = kohya_module_name("unet", module, "sd1", None)
        kept = int((layer.lora_E[ADAPTER] != 0).sum())
        if not kept:
            assert name not in modules
            continue
        got = ui_delta(modules[name], layer.weight.shape)
        assert torch.allclose(got, layer.get_delta_weight(ADAPTER).float(), atol=1e-6), module
        ranks.add(modules[name]["lora_down.weight"].shape[0])
    assert len(ranks) > 1  # the file carries each module's own rank


@pytest.mark.parametrize("spec", ["demo:sd15", "demo:sdxl"])
def test_adalora_moves_the_budget_and_exports_a_plain_lora(tmp_path, spec):
    make_dataset(tmp_path / "data", count=4)
    _, adapter = train_verified(tmp_path, "ada", f"model.path={spec}", "lora.algorithm=adalora", "lora.rank=2",
                        "lora.adalora_init_rank=4", "lora.adalora_warmup=0", "lora.adalora_final=0.5",
                        "lora.train_text_encoder=true", "optimizer.lr=1e-2", steps=6)
    tensors = load_file(str(adapter))
    modules = modules_of(tensors)
    assert all(set(parts) == {"lora_down.weight", "lora_up.weight", "alpha"} for parts in modules.values())
    unet = {m: p["lora_down.weight"].shape[0] for m, p in modules.items() if m.startswith("lora_unet_")}
    assert max(unet.values()) <= 4 and len(set(unet.values())) > 1  # ranks moved between layers
    meta = adapter_metadata(adapter)
    assert meta["ss_network_module"] == "networks.lora" and "adalora" in meta["ss_network_args"]


def test_adalora_refuses_convolutions_and_ema(tmp_path):
    from tests.support.engine import tiny_config
    from trainer.shared.errors import ConfigError

    with pytest.raises(ConfigError, match="adalora") as err:
        tiny_config(tmp_path, lora__algorithm="adalora", lora__targets="full")
    assert "attention" in err.value.hint
    with pytest.raises(ConfigError, match="lora.ema_decay"):
        tiny_config(tmp_path, lora__algorithm="adalora", lora__ema_decay=0.99)


def test_adalora_resumes_with_its_final_allocation(tmp_path, dataset_dir):
    from tests.support.engine import tiny_config, train_in_process

    cfg = tiny_config(dataset_dir, schedule__max_steps=6, lora__algorithm="adalora", lora__rank=2,
                      lora__adalora_init_rank=4, lora__adalora_warmup=0.0, lora__adalora_final=0.5,
                      saving__dtype="fp32", optimizer__lr=1e-2)
    straight, _ = train_in_process(cfg, tmp_path / "straight")
    a = load_file(str(straight))
    for stop_at in (2, 4):  # while the budget moves (its scores come back), and after the final allocation (step 3)
        train_in_process(cfg, tmp_path / f"cut{stop_at}", stop_at=stop_at)
        resumed, _ = train_in_process(cfg, tmp_path / f"cut{stop_at}", resume=True)
        b = load_file(str(resumed))
        assert a.keys() == b.keys()  # the same modules kept, at the same ranks
        assert all(a[k].shape == b[k].shape and torch.allclose(a[k], b[k], atol=1e-5) for k in a), stop_at
