"""verify's per-UI verdicts for the DiT families, on files of any trainer: which UIs load a file whole, which
drop layers silently, which refuse it (the rules measured in the UIs' code, kept by each family). The files
are built here with the real models' names and shapes (rank 1: a few hundred KB); verify reads the shapes
it checks against from meta models built from the real config folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.support.engine import REPO
from trainer.export.kohya import to_kohya
from trainer.export.verify import verify_file, verify_tensors
from trainer.families.registry import get
from trainer.lora.algorithms import module_scales, peft_config
from trainer.lora.inject import adapter_state_dict, inject
from trainer.shared.config import TrainConfig

FLUX_UIS = {"comfyui", "forge", "invokeai", "diffusers"}
NEW_UIS = {"comfyui", "forge-neo", "invokeai", "diffusers"}  # original Forge has no Z-Image nor FLUX.2
H, Z, K9 = 3072, 3840, 4096  # hidden widths: FLUX.1 and klein 4B, Z-Image, klein 9B


def _lora(path: Path, modules: dict[str, tuple[int, int]], peft: bool = True, alpha: bool = False,
          metadata: dict | None = None) -> Path:
    """A rank-1 LoRA file: {module: (out, in)}; lora_A/lora_B or kohya's lora_down/lora_up (+ `.alpha`)."""
    down, up = ("lora_A", "lora_B") if peft else ("lora_down", "lora_up")
    tensors = {}
    for module, (out_features, in_features) in modules.items():
        tensors[f"{module}.{down}.weight"] = torch.zeros(1, in_features, dtype=torch.float16)
        tensors[f"{module}.{up}.weight"] = torch.zeros(out_features, 1, dtype=torch.float16)
        if alpha:
            tensors[f"{module}.alpha"] = torch.tensor(1.0)
    save_file(tensors, str(path), metadata=metadata or {})
    return path


def _verdicts(report) -> dict[str, str]:
    return {ui: verdict for ui, (verdict, _) in report.uis.items()}


def _loads_in(report, uis: set[str]) -> set[str]:
    return {ui for ui, verdict in _verdicts(report).items() if verdict == "loads" and ui in uis}


# ---- FLUX.1 ---------------------------------------------------------------------------------------------

def test_flux_kohya_blocks_and_clip_l_load_in_all_four(tmp_path):
    path = _lora(tmp_path / "k.safetensors", {"lora_unet_double_blocks_0_img_attn_qkv": (3 * H, H),
                                              "lora_unet_single_blocks_0_linear1": (7 * H, H),
                                              "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768)},
                 peft=False, alpha=True, metadata={"ss_base_model_version": "flux1"})
    report = verify_file(path)
    assert report.ok and _loads_in(report, FLUX_UIS) == FLUX_UIS, report.summary()
    assert "ComfyUI ✓, Forge ✓, InvokeAI ✓, diffusers ✓" in report.summary()


def test_flux_embedders_are_refused_by_invokeai_and_dropped_by_diffusers(tmp_path):
    path = _lora(tmp_path / "e.safetensors", {"lora_unet_double_blocks_0_img_attn_qkv": (3 * H, H),
                                              "lora_unet_img_in": (H, 64), "lora_unet_txt_in": (H, 4096)},
                 peft=False, alpha=True, metadata={"ss_base_model_version": "flux1"})
    report = verify_file(path)
    assert report.applies and not report.ok
    assert _verdicts(report) == {"comfyui": "loads", "forge": "loads", "invokeai": "refuses", "diffusers": "drops"}
    assert "InvokeAI ✗ refuses: LoRA on img_in, txt_in (embedders/final layer)" in report.summary()
    assert "diffusers ⚠ drops 2 layers (lora_unet_img_in, lora_unet_txt_in)" in report.summary()


def test_flux_t5_keys_are_refused_by_invokeai_and_dropped_by_diffusers(tmp_path):
    path = _lora(tmp_path / "t5.safetensors", {"lora_unet_double_blocks_0_img_attn_qkv": (3 * H, H),
                                               "lora_te2_encoder_block_0_layer_0_SelfAttention_q": (4096, 4096)},
                 peft=False, alpha=True, metadata={"ss_base_model_version": "flux1"})
    report = verify_file(path)
    assert (report.uis["invokeai"][0], report.uis["diffusers"][0]) == ("refuses", "drops")
    assert "T5" in report.refused["invokeai"] and "T5" in report.drops["diffusers"]


MARKED = {"transformer.single_transformer_blocks.0.attn.to_q": (H, H),
          "transformer.transformer_blocks.0.attn.add_q_proj": (H, H),
          "transformer.transformer_blocks.0.attn.to_q": (H, H)}


def test_flux_diffusers_layout_loads_in_all_four_only_plain(tmp_path):
    meta = {"ss_base_model_version": "flux1"}
    plain = verify_file(_lora(tmp_path / "p.safetensors", MARKED, metadata=meta))
    assert plain.ok and _loads_in(plain, FLUX_UIS) == FLUX_UIS, plain.summary()
    with_alpha = verify_file(_lora(tmp_path / "a.safetensors", MARKED, alpha=True, metadata=meta))
    assert set(with_alpha.refused) == {"invokeai"} and "alpha" in with_alpha.refused["invokeai"]
    te = {**MARKED, "text_encoder.text_model.encoder.layers.0.self_attn.q_proj": (768, 768)}
    with_te = verify_file(_lora(tmp_path / "te.safetensors", te, metadata=meta))
    assert with_te.applies and set(with_te.refused) == {"invokeai", "diffusers"}, with_te.summary()
    unmarked = verify_file(_lora(tmp_path / "u.safetensors", {"transformer.transformer_blocks.0.attn.to_q": (H, H)},
                                 metadata=meta))
    assert set(unmarked.refused) == {"invokeai"} and "single_transformer_blocks.0.attn.to_q" in \
        unmarked.refused["invokeai"]


def test_flux_bfl_names_under_diffusion_model_apply_nothing_in_diffusers(tmp_path):
    path = _lora(tmp_path / "d.safetensors", {"diffusion_model.double_blocks.0.img_attn.qkv": (3 * H, H),
                                              "diffusion_model.single_blocks.1.linear2": (H, 5 * H)},
                 metadata={"ss_base_model_version": "flux1"})
    report = verify_file(path)
    assert report.applies and set(report.drops) == {"diffusers"} and not report.refused, report.summary()
    assert report.drops["diffusers"].startswith("2 layers (double_blocks.0.img_attn.qkv, single_blocks.1.linear2)")


# ---- Z-Image --------------------------------------------------------------------------------------------

def _zimage(names: list[str]) -> dict[str, tuple[int, int]]:
    widths = {"qkv": (3 * Z, Z), "w1": (10240, Z)}
    return {name: widths.get(name.rsplit(".", 1)[-1].rsplit("_", 1)[-1], (Z, Z)) for name in names}


def test_zimage_split_names_load_in_all_four_and_forge_has_no_zimage(tmp_path):
    names = [f"diffusion_model.layers.0.attention.{p}" for p in ("to_q", "to_k", "to_v", "to_out.0")]
    report = verify_file(_lora(tmp_path / "z.safetensors", _zimage(names + ["diffusion_model.layers.1.feed_forward.w1"])))
    assert report.ok and _loads_in(report, NEW_UIS) == NEW_UIS, report.summary()
    assert report.uis["forge"] == ("absent", "has no Z-Image (Forge Neo has)")
    assert report.summary().endswith("diffusers ✓, Forge – has no Z-Image (Forge Neo has)")


def test_zimage_fused_qkv_is_dropped_by_invokeai_and_diffusers(tmp_path):
    names = ["diffusion_model.layers.0.attention.qkv", "diffusion_model.layers.0.attention.to_out.0"]
    report = verify_file(_lora(tmp_path / "f.safetensors", _zimage(names)))
    assert report.applies and not report.refused and set(report.drops) == {"invokeai", "diffusers"}, report.summary()
    assert "1 layer (layers.0.attention.qkv)" in report.drops["diffusers"]


def test_zimage_kohya_names_are_dropped_or_refused(tmp_path):
    names = ["lora_unet_layers_0_attention_to_q", "diffusion_model.layers.0.attention.to_k"]
    report = verify_file(_lora(tmp_path / "k.safetensors", _zimage(names), peft=False, alpha=True,
                               metadata={"ss_base_model_version": "zimage"}))
    assert _verdicts(report) == {"comfyui": "drops", "forge-neo": "drops", "invokeai": "refuses",
                                 "diffusers": "unknown", "forge": "absent"}, report.summary()


# ---- FLUX.2 klein ---------------------------------------------------------------------------------------

KLEIN_4B_MLP = 2 * 3 * H  # klein's img_mlp.0 is SwiGLU's fused gate|up: 2 x 9216 rows at 4B


def test_klein_bfl_names_load_in_all_four_only_without_alpha(tmp_path):
    modules = {"diffusion_model.double_blocks.0.img_attn.qkv": (3 * H, H),
               "diffusion_model.double_blocks.0.img_attn.proj": (H, H),
               "diffusion_model.double_blocks.0.img_mlp.0": (KLEIN_4B_MLP, H)}
    meta = {"modelspec.architecture": "flux-2-klein-4b"}
    plain = verify_file(_lora(tmp_path / "k.safetensors", modules, metadata=meta))
    assert plain.ok and _loads_in(plain, NEW_UIS) == NEW_UIS and plain.uis["forge"][0] == "absent", plain.summary()
    alpha = verify_file(_lora(tmp_path / "a.safetensors", modules, alpha=True, metadata=meta))
    assert set(alpha.refused) == {"invokeai", "diffusers"} and "Unsupported lora format" in alpha.refused["invokeai"]


def test_a_4b_lora_without_mlp_layers_is_filed_as_flux1_by_invokeai(tmp_path):
    attention = {"diffusion_model.double_blocks.0.img_attn.qkv": (3 * H, H),
                 "diffusion_model.double_blocks.0.img_attn.proj": (H, H)}
    report = verify_file(_lora(tmp_path / "4b.safetensors", attention,
                               metadata={"modelspec.architecture": "flux-2-klein-4b"}))
    assert report.applies and set(report.refused) == {"invokeai"} and "FLUX.1" in report.refused["invokeai"]
    wide = {k: (r * K9 // H, K9) for k, (r, _) in attention.items()}  # 9B: its width tells it from FLUX.1
    report = verify_file(_lora(tmp_path / "9b.safetensors", wide, metadata={"modelspec.architecture": "flux-2-klein-9b"}))
    assert report.ok, report.summary()


def test_a_9b_lora_does_not_fit_a_4b_model(tmp_path):
    wide = {"diffusion_model.double_blocks.0.img_attn.proj": (K9, K9)}
    report = verify_file(_lora(tmp_path / "9b.safetensors", wide), "flux2-klein-4b")
    assert not report.applies and "does not fit" in report.ignored[0]


# ---- our own exports, at the real models' shapes --------------------------------------------------------

def _our_export(arch: str, config: str, targets: str) -> dict[str, tuple]:
    """{key: shape} of the file we export for the real model (built on the meta device), in name order."""
    family = get(arch)
    cfg = TrainConfig()
    cfg.lora.rank, cfg.lora.alpha = 4, 2.0
    unet = family.meta_components(family.config_folder(config))["unet"]
    with torch.device("meta"):
        inject(unet, peft_config(cfg.lora, family.lora.denoiser[targets], family.lora.conv, family.lora.blocks))
    tensors = to_kohya({"unet": adapter_state_dict(unet)}, arch, dict(unet.config), {"unet": module_scales(unet)},
                       torch.bfloat16)
    return {key: tuple(tensors[key].shape) for key in sorted(tensors)}


@pytest.mark.parametrize("arch, config", [("flux1", "flux1-dev"), ("zimage", "zimage"),
                                          ("flux2-klein", "flux2-klein-4b"), ("flux2-klein", "flux2-klein-9b")])
@pytest.mark.parametrize("targets", ["attention", "full"])
def test_our_exports_load_whole_in_every_ui_that_has_the_model(arch, config, targets):
    shapes = _our_export(arch, config, targets)
    report = verify_tensors(shapes, config, arch)
    uis = FLUX_UIS if arch == "flux1" else NEW_UIS
    assert report.ok and report.applied == len(shapes) and _loads_in(report, uis) == uis, report.summary()


def test_inspect_names_each_ui_and_its_verdict(tmp_path):
    names = ["diffusion_model.layers.0.attention.qkv"]
    path = _lora(tmp_path / "fused.safetensors", _zimage(names))
    proc = subprocess.run([sys.executable, "-m", "trainer", "inspect", str(path)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ComfyUI ✓, Forge Neo ✓, InvokeAI ⚠ drops 1 layer (layers.0.attention.qkv): fused attention.qkv" \
        in proc.stdout, proc.stdout
    shown = subprocess.run([sys.executable, "-m", "trainer", "inspect", str(path), "--json"], capture_output=True,
                           text=True, cwd=REPO, timeout=120)
    verdicts = json.loads(shown.stdout)["ui_verdicts"]
    assert {ui: v["verdict"] for ui, v in verdicts.items()} == {
        "comfyui": "loads", "forge-neo": "loads", "invokeai": "drops", "diffusers": "drops", "forge": "absent"}


def test_the_4b_markers_are_zero_and_make_invokeai_file_the_lora_as_klein():
    from trainer.families.klein_lora import invokeai_files_as_flux2, with_invokeai_markers

    qkv = "diffusion_model.double_blocks.0.img_attn.qkv"
    tensors = {f"{qkv}.lora_A.weight": torch.randn(12, H), f"{qkv}.lora_B.weight": torch.randn(3 * H, 12),
               "diffusion_model.single_blocks.0.linear2.lora_A.weight": torch.randn(4, 4 * H),
               "diffusion_model.single_blocks.0.linear2.lora_B.weight": torch.randn(H, 4)}
    config = get("flux2-klein").denoiser_config("flux2-klein-4b")
    marked = with_invokeai_markers(tensors, config)
    added = {k: v for k, v in marked.items() if k not in tensors}
    assert not invokeai_files_as_flux2({k: tuple(v.shape) for k, v in tensors.items()})
    assert invokeai_files_as_flux2({k: tuple(v.shape) for k, v in marked.items()})
    assert sorted(added) == [f"diffusion_model.double_blocks.0.{m}.lora_{p}.weight"
                             for m in ("img_attn.proj", "img_mlp.0") for p in "AB"]
    assert all(not v.any() and 4 in v.shape for v in added.values())  # nothing added to any weight, rank 4


def test_a_fused_zimage_file_exports_to_diffusers_as_split_q_k_v(tmp_path):
    """ComfyUI's fused names, which InvokeAI and diffusers drop, become to_q/to_k/to_v with the same update."""
    from safetensors.torch import load_file

    from trainer.export.exporter import export_adapter

    down, up = torch.randn(2, 32), torch.randn(96, 2)  # the tiny Z-Image: width 32, q|k|v 96 rows
    fused = tmp_path / "fused.safetensors"
    save_file({"diffusion_model.layers.0.attention.qkv.lora_A.weight": down,
               "diffusion_model.layers.0.attention.qkv.lora_B.weight": up}, str(fused),
              metadata={"lora_studio_base_config": "tiny-zimage"})
    out = load_file(str(export_adapter(fused, "diffusers", tmp_path / "out").adapter))
    for i, part in enumerate(("to_q", "to_k", "to_v")):
        name = f"transformer.layers.0.attention.{part}"
        delta = out[f"{name}.lora_B.weight"] @ out[f"{name}.lora_A.weight"]
        assert torch.equal(delta, up[32 * i:32 * (i + 1)] @ down), part  # the same products, exactly
