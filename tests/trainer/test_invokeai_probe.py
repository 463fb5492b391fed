"""InvokeAI installs an SD LoRA only when its probe tells the base model from the file (its reading is in
tests/support/ui_formulas.py). Every algorithm's export passes it on the real architectures' shapes, and our
verify reports a file that does not, as InvokeAI would refuse it."""

import subprocess
import sys

import pytest
import torch

from tests.support.engine import tiny_config
from tests.support.loras import our_lora, write_lora
from tests.support.ui_formulas import invokeai_base, invokeai_token_vector_length
from trainer.export import invokeai
from trainer.export.kohya import to_kohya
from trainer.export.verify import context_dim, verify_file, verify_tensors
from trainer.families.registry import get
from trainer.lora.algorithms import module_scales, peft_config
from trainer.lora.inject import adapter_state_dict, inject
from trainer.shared.config import TrainConfig

ALGORITHMS = [("lora", {}), ("lora", {"dora": True}), ("loha", {}), ("lokr", {}), ("lokr", {"rank": 4}),
              ("lokr", {"lokr_factor": 4})]
REAL = [("sd1", "sd15", 768), ("sd2", "sd2", 1024), ("sdxl", "sdxl", 2048)]


def _real_shapes(arch: str, config: str, algorithm: str, **lora) -> dict[str, tuple]:
    """{key: shape} of the file we export for the real architecture, UNet and text encoders trained, in the
    order a single-dtype safetensors file holds them (by name). Built on the meta device: shapes only."""
    family = get(arch)
    cfg = TrainConfig()
    cfg.lora.algorithm, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets = algorithm, 16, 8.0, "full"
    for key, value in lora.items():
        setattr(cfg.lora, key, value)
    parts = family.meta_components(family.config_folder(config))
    models = {"unet": parts["unet"], **{name: parts[name] for name in family.text_encoders}}
    with torch.device("meta"):
        inject(models["unet"], peft_config(cfg.lora, family.lora.denoiser["full"], family.lora.conv,
                                           family.lora.blocks))
        for name in family.text_encoders:
            inject(models[name], peft_config(cfg.lora, family.lora.text_encoder))
    tensors = to_kohya({c: adapter_state_dict(m) for c, m in models.items()}, arch, dict(models["unet"].config),
                       {c: module_scales(m) for c, m in models.items()}, torch.float16)
    return {key: tuple(tensors[key].shape) for key in sorted(tensors)}


@pytest.mark.parametrize("arch,config,length", REAL)
@pytest.mark.parametrize("algorithm,lora", ALGORITHMS)
def test_invokeai_files_every_algorithm_under_its_base(arch, config, length, algorithm, lora):
    shapes = _real_shapes(arch, config, algorithm, **lora)
    assert invokeai_token_vector_length(shapes) == length == context_dim(config, arch)
    assert invokeai_base(shapes) == get(arch).invokeai_base
    report = verify_tensors(shapes, config, arch)
    assert report.ok and report.applied == len(shapes), report.summary()
    assert invokeai.token_vector_length(shapes) == length  # our rule reads what InvokeAI reads


def test_lokr_stores_w2_whole_exactly_where_the_probe_reads(monkeypatch):
    """At rank 4 LoKr's W2 stays two factors (LyCORIS' choice below half its side) except on probed layers;
    written the old way, decomposed everywhere, InvokeAI's probe reads nothing from an SD 1.x file."""
    shapes = _real_shapes("sd1", "sd15", "lokr", rank=4)
    whole = {k.rsplit(".", 1)[0] for k in shapes if k.endswith(".lokr_w2")}
    assert whole == {k.rsplit(".", 1)[0] for k in shapes if invokeai.probed(k.rsplit(".", 1)[0])}
    assert any(k.endswith(".lokr_w2_b") for k in shapes)

    monkeypatch.setattr("trainer.export.kohya.probed", lambda module: False)
    old = _real_shapes("sd1", "sd15", "lokr", rank=4)
    assert invokeai_token_vector_length(old) is None and invokeai_base(old) is None
    report = verify_tensors(old, "sd15", "sd1")
    assert report.applies and not report.ok and "InvokeAI ✗ refuses:" in report.summary()
    # SDXL files without a length are still told by their deep UNet blocks, by InvokeAI and by our verify
    old_xl = _real_shapes("sdxl", "sdxl", "lokr", rank=4)
    assert invokeai_token_vector_length(old_xl) is None and invokeai_base(old_xl) == "sdxl"
    assert verify_tensors(old_xl, "sdxl", "sdxl").ok


def test_adalora_exported_as_lora_passes_the_probe(tmp_path):
    from trainer.models.load import load_base_model
    from trainer.run.runtime import add_adapters

    cfg = tiny_config(tmp_path, lora__algorithm="adalora", lora__rank=2, lora__train_text_encoder=True)
    model = load_base_model(cfg.model.path)
    add_adapters(cfg, model)
    torch.manual_seed(0)
    models = {"unet": model.unet, "text_encoder": model.text_encoders[0]}
    for m in models.values():
        for name, p in m.named_parameters():
            if ".lora_" in name:  # trained factors, and about half the triplets pruned as the allocator does
                p.data = torch.randn_like(p) * (torch.rand(p.shape) < 0.5 if ".lora_E." in name else 0.1)
    tensors = to_kohya({c: adapter_state_dict(m) for c, m in models.items()}, "sd1", dict(model.unet.config),
                       {c: module_scales(m) for c, m in models.items()}, torch.float32)
    shapes = {key: tuple(tensors[key].shape) for key in sorted(tensors)}
    assert invokeai_token_vector_length(shapes) == context_dim("tiny-sd15", "sd1")
    assert verify_tensors(shapes, "tiny-sd15", "sd1").ok


def test_verify_and_export_report_a_file_invokeai_refuses(tmp_path):
    # a LoRA on self-attention only (a "slider"): A1111, Forge and ComfyUI apply it, InvokeAI cannot file it
    lora = our_lora(tmp_path / "full.safetensors", te=False)
    from safetensors.torch import load_file

    tensors = {k: v for k, v in load_file(str(lora)).items() if "_attn2_" not in k}
    meta = {"lora_studio_base_config": "tiny-sd15", "ss_base_model_version": "sd_v1", "ss_output_name": "slider"}
    slider = write_lora(tmp_path / "slider.safetensors", tensors, meta)
    assert invokeai_base({k: tuple(v.shape) for k, v in tensors.items()}) is None
    report = verify_file(slider)
    assert report.applies and set(report.refused) == {"invokeai"}, report.summary()
    assert verify_file(lora).ok  # the same LoRA with its cross-attention layers is filed

    root = tmp_path / "invokeai"
    root.mkdir()
    (root / "invokeai.yaml").write_text("", encoding="utf-8")
    refused = _cli("export", str(slider), "--to", str(root))
    assert refused.returncode == 2 and "InvokeAI would not install" in refused.stderr, refused.stderr
    assert not (root / "lora-studio" / "slider.safetensors").exists()
    elsewhere = _cli("export", str(slider), "--to", str(tmp_path / "folder"))
    assert elsewhere.returncode == 0 and "InvokeAI ✗ refuses:" in elsewhere.stdout, elsewhere.stderr


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, timeout=120)
