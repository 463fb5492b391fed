"""Regenerate assets/configs/{zimage,flux2-klein-4b,flux2-klein-9b,tiny-zimage,tiny-flux2-klein} and check them.

The real folders are the diffusers layouts of Tongyi-MAI/Z-Image(-Turbo) (ZImagePipeline:
ZImageTransformer2DModel, FLUX.1's 16-channel AutoencoderKL, Qwen3-4B as Qwen3Model, a static-shift
FlowMatchEulerDiscreteScheduler) and of black-forest-labs/FLUX.2-klein(-base)-4B / -9B (Flux2KleinPipeline:
Flux2Transformer2DModel, AutoencoderKLFlux2, Qwen3-4B / Qwen3-8B as Qwen3ForCausalLM, FLUX.2's
resolution-dependent schedule). Base and distilled checkpoints share each folder: their transformer,
VAE, text-encoder and scheduler configs are identical (klein's diffusers repos differ only in
model_index's `is_distilled`, written here as false, the base; Z-Image Base and Turbo only in sampling
steps and guidance, which are no config's business).

Checks, each model built on the meta device from the written JSON:
- parameter counts against the published ones (Z-Image transformer 6,154,908,736 = the 12.3 GB bf16
  file; Qwen3-4B 4,022,468,096; Qwen3-8B 8,190,735,360; the FLUX.1 AE 83,819,683) and klein's against
  BFL's bf16 file sizes (7.75 GB, 18.2 GB);
- the transformers counted a second way, from the original modules' definitions (BFL flux2/model.py;
  Tongyi-MAI's zimage/transformer.py sizes under ComfyUI's names), and zimage_layout/flux2_layout must
  give the meta model exactly those names and shapes;
- the tiny folders build with random weights in well under a second.
Run from the repo root: `python scripts/make_zimage_klein_configs.py`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIGS = ROOT / "assets" / "configs"
DIFFUSERS_VERSION = "0.42.1"

ZIMAGE = dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=3840, n_layers=30,
              n_refiner_layers=2, n_heads=30, n_kv_heads=30, norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560,
              rope_theta=256.0, t_scale=1000.0, axes_dims=(32, 48, 48), axes_lens=(1536, 512, 512))
# a tiny Z-Image: the same blocks; head_dim 16 = rope axes 4 + 6 + 6; caption width = the tiny Qwen3's
TINY_ZIMAGE = dict(ZIMAGE, dim=32, n_layers=2, n_refiner_layers=2, n_heads=2, n_kv_heads=2, cap_feat_dim=32,
                   axes_dims=(4, 6, 6))
KLEIN = dict(patch_size=1, in_channels=128, attention_head_dim=128, timestep_guidance_channels=256,
             mlp_ratio=3.0, axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, eps=1e-6, guidance_embeds=False)
KLEIN_4B = dict(KLEIN, num_layers=5, num_single_layers=20, num_attention_heads=24, joint_attention_dim=7680)
KLEIN_9B = dict(KLEIN, num_layers=8, num_single_layers=24, num_attention_heads=32, joint_attention_dim=12288)
# a tiny klein: width 32 (2 heads x 16 = rope 4 x 4), text width 3 x 32 (three stacked tiny-Qwen3 layers)
TINY_KLEIN = dict(KLEIN, num_layers=2, num_single_layers=2, num_attention_heads=2, attention_head_dim=16,
                  joint_attention_dim=96, axes_dims_rope=(4, 4, 4, 4))
FLUX2_VAE = {}  # AutoencoderKLFlux2's defaults are BFL's AutoEncoderParams (ch 128, mult 1-2-4-4, z 32)
TINY_FLUX2_VAE = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=64)
# Qwen/Qwen3-4B and Qwen3-8B config.json as published, written by hand: transformers 5 rewrites
# rope_theta into rope_parameters and adds keys older readers do not know
QWEN3_4B = {"architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
            "hidden_size": 2560, "initializer_range": 0.02, "intermediate_size": 9728,
            "max_position_embeddings": 40960, "max_window_layers": 36, "model_type": "qwen3",
            "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
            "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": True,
            "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936}
QWEN3_8B = dict(QWEN3_4B, hidden_size=4096, intermediate_size=12288, tie_word_embeddings=False)
# the full 151936-row table: the chat template's ids reach 151668 (</think>); 28 layers so that klein's
# hidden states 9, 18 and 27 exist and none is the final, normed one (as in the real 36-layer model)
QWEN3_TINY = dict(QWEN3_4B, head_dim=16, hidden_size=32, intermediate_size=64, max_window_layers=28,
                  num_attention_heads=2, num_hidden_layers=28, num_key_value_heads=1)
ZIMAGE_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=False)
# FLUX.2's pipelines compute mu from the image's token count and step count (compute_empirical_mu);
# the dynamic-shift fields are those of BFL's klein diffusers repos
KLEIN_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                       base_image_seq_len=256, max_image_seq_len=4096, time_shift_type="exponential")

FOLDERS = {  # name: (kind, transformer, vae (a dict, or the FLUX.1 folder to copy), Qwen3, scheduler)
    "zimage": ("zimage", ZIMAGE, "flux1-dev", QWEN3_4B, ZIMAGE_SCHEDULER),
    "flux2-klein-4b": ("klein", KLEIN_4B, FLUX2_VAE, QWEN3_4B, KLEIN_SCHEDULER),
    "flux2-klein-9b": ("klein", KLEIN_9B, FLUX2_VAE, QWEN3_8B, KLEIN_SCHEDULER),
    "tiny-zimage": ("zimage", TINY_ZIMAGE, "tiny-flux1", QWEN3_TINY, ZIMAGE_SCHEDULER),
    "tiny-flux2-klein": ("klein", TINY_KLEIN, TINY_FLUX2_VAE, QWEN3_TINY, KLEIN_SCHEDULER),
}
PUBLISHED = {"zimage": {"transformer": 6_154_908_736, "vae": 83_819_683, "text_encoder": 4_022_468_096},
             "flux2-klein-4b": {"text_encoder": 4_022_468_096},
             "flux2-klein-9b": {"text_encoder": 8_190_735_360}}
BF16_GB = {"flux2-klein-4b": (7.75, 2), "flux2-klein-9b": (18.2, 1)}  # BFL's bf16 files, as rounded


def _clean(config, class_name: str) -> dict:
    out = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    return {"_class_name": class_name, **{k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}}


def transformer_config(kind: str, kw: dict) -> dict:
    from diffusers import Flux2Transformer2DModel, ZImageTransformer2DModel

    cls = ZImageTransformer2DModel if kind == "zimage" else Flux2Transformer2DModel
    with torch.device("meta"):
        return _clean(cls(**kw).config, cls.__name__)


def vae_config(vae) -> dict:
    from diffusers import AutoencoderKLFlux2

    if isinstance(vae, str):  # Z-Image decodes with FLUX.1's AE: the very same config
        return json.loads((CONFIGS / vae / "vae" / "config.json").read_text())
    with torch.device("meta"):
        return _clean(AutoencoderKLFlux2(**vae).config, "AutoencoderKLFlux2")


def scheduler_config(kw: dict) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return _clean(FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **kw).config,
                  "FlowMatchEulerDiscreteScheduler")


def model_index(kind: str) -> dict:
    common = {"_diffusers_version": DIFFUSERS_VERSION, "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
    if kind == "zimage":
        return {"_class_name": "ZImagePipeline", **common, "text_encoder": ["transformers", "Qwen3Model"],
                "tokenizer": ["transformers", "Qwen2Tokenizer"],
                "transformer": ["diffusers", "ZImageTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]}
    return {"_class_name": "Flux2KleinPipeline", **common, "is_distilled": False,
            "text_encoder": ["transformers", "Qwen3ForCausalLM"], "tokenizer": ["transformers", "Qwen2TokenizerFast"],
            "transformer": ["diffusers", "Flux2Transformer2DModel"], "vae": ["diffusers", "AutoencoderKLFlux2"]}


def write_folder(name: str) -> Path:
    kind, transformer, vae, qwen, scheduler = FOLDERS[name]
    encoder = dict(qwen, architectures=["Qwen3Model" if kind == "zimage" else "Qwen3ForCausalLM"])
    files = {"model_index.json": model_index(kind), "transformer/config.json": transformer_config(kind, transformer),
             "vae/config.json": vae_config(vae), "text_encoder/config.json": encoder,
             "scheduler/scheduler_config.json": scheduler_config(scheduler)}
    folder = CONFIGS / name
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return folder


def build_components(folder: Path, device: str = "meta") -> dict:
    """transformer, vae, text_encoder built from a config folder (random weights, or none on meta)."""
    from diffusers import AutoencoderKL, AutoencoderKLFlux2, Flux2Transformer2DModel, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    index = json.loads((folder / "model_index.json").read_text())
    zimage = index["_class_name"] == "ZImagePipeline"

    def read(sub):
        return json.loads((folder / sub / "config.json").read_text())

    with torch.device(device):
        transformer = (ZImageTransformer2DModel if zimage else Flux2Transformer2DModel).from_config(read("transformer"))
        vae = (AutoencoderKL if zimage else AutoencoderKLFlux2).from_config(read("vae"))
        config = Qwen3Config.from_pretrained(str(folder / "text_encoder"))
        text_encoder = (Qwen3Model if zimage else Qwen3ForCausalLM)(config)
    return {"transformer": transformer, "vae": vae, "text_encoder": text_encoder}


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())  # Qwen3-4B's tied lm_head once


def zimage_reference_shapes(c: dict) -> dict[str, tuple]:
    """Z-Image in ComfyUI's names, sized as Tongyi-MAI's zimage/transformer.py builds it."""
    dim, hd, mod, ffn = c["dim"], c["dim"] // c["n_heads"], min(c["dim"], 256), int(c["dim"] / 3 * 8)
    patch = c["all_patch_size"][0] ** 2 * c["all_f_patch_size"][0] * c["in_channels"]
    shapes = {"x_pad_token": (1, dim), "cap_pad_token": (1, dim), "cap_embedder.0.weight": (c["cap_feat_dim"],)}

    def linear(name, n_in, n_out, bias=True):
        shapes.update({f"{name}.weight": (n_out, n_in), **({f"{name}.bias": (n_out,)} if bias else {})})

    linear("x_embedder", patch, dim), linear("final_layer.linear", dim, patch)
    linear("final_layer.adaLN_modulation.1", mod, dim), linear("cap_embedder.1", c["cap_feat_dim"], dim)
    linear("t_embedder.mlp.0", 256, 1024), linear("t_embedder.mlp.2", 1024, mod)
    for group, n in (("layers", c["n_layers"]), ("noise_refiner", c["n_refiner_layers"]),
                     ("context_refiner", c["n_refiner_layers"])):
        for i in range(n):
            b = f"{group}.{i}."
            linear(b + "attention.qkv", dim, (c["n_heads"] + 2 * c["n_kv_heads"]) * hd, bias=False)
            linear(b + "attention.out", c["n_heads"] * hd, dim, bias=False)
            linear(b + "feed_forward.w1", dim, ffn, False), linear(b + "feed_forward.w3", dim, ffn, False)
            linear(b + "feed_forward.w2", ffn, dim, bias=False)
            shapes.update({f"{b}attention.{n}_norm.weight": (hd,) for n in "qk"})
            shapes.update({f"{b}{n}.weight": (dim,) for n in ("attention_norm1", "attention_norm2",
                                                              "ffn_norm1", "ffn_norm2")})
            if group != "context_refiner":
                linear(b + "adaLN_modulation.0", mod, 4 * dim)
    return shapes


def flux2_reference_shapes(c: dict) -> dict[str, tuple]:
    """FLUX.2 in BFL's names and shapes, from BFL's flux2/model.py (no biases anywhere)."""
    h, hd = c["num_attention_heads"] * c["attention_head_dim"], c["attention_head_dim"]
    mlp = int(h * c["mlp_ratio"])
    shapes = {}

    def linear(name, n_in, n_out):
        shapes[f"{name}.weight"] = (n_out, n_in)

    linear("img_in", c["in_channels"], h), linear("txt_in", c["joint_attention_dim"], h)
    linear("time_in.in_layer", 256, h), linear("time_in.out_layer", h, h)
    if c["guidance_embeds"]:
        linear("guidance_in.in_layer", 256, h), linear("guidance_in.out_layer", h, h)
    linear("double_stream_modulation_img.lin", h, 6 * h), linear("double_stream_modulation_txt.lin", h, 6 * h)
    linear("single_stream_modulation.lin", h, 3 * h)
    linear("final_layer.linear", h, c["in_channels"]), linear("final_layer.adaLN_modulation.1", h, 2 * h)
    for i in range(c["num_layers"]):
        for s in ("img", "txt"):
            b = f"double_blocks.{i}.{s}_"
            linear(b + "attn.qkv", h, 3 * h), linear(b + "attn.proj", h, h)
            linear(b + "mlp.0", h, 2 * mlp), linear(b + "mlp.2", mlp, h)
            shapes.update({f"{b}attn.norm.{n}.scale": (hd,) for n in ("query_norm", "key_norm")})
    for i in range(c["num_single_layers"]):
        b = f"single_blocks.{i}."
        linear(b + "linear1", h, 3 * h + 2 * mlp), linear(b + "linear2", h + mlp, h)
        shapes.update({f"{b}norm.{n}.scale": (hd,) for n in ("query_norm", "key_norm")})
    return shapes


def check(name: str, folder: Path) -> dict[str, int]:
    from trainer.models import flux2_layout, zimage_layout

    kind = FOLDERS[name][0]
    parts = build_components(folder)
    counts = {k: count(m) for k, m in parts.items()}
    config = json.loads((folder / "transformer" / "config.json").read_text())
    shapes = {k: tuple(v.shape) for k, v in parts["transformer"].state_dict().items()}
    if kind == "zimage":
        reference, mapped = zimage_reference_shapes(config), zimage_layout.to_original(shapes)
    else:
        reference, mapped = flux2_reference_shapes(config), flux2_layout.to_original(shapes)
    assert mapped == reference, f"{name}: the layout map disagrees with the original modules' shapes"
    original = sum(torch.Size(s).numel() for s in reference.values())
    assert original == counts["transformer"], f"{name}: original {original:,} != diffusers {counts['transformer']:,}"
    for component, expected in PUBLISHED.get(name, {}).items():
        assert counts[component] == expected, f"{name} {component}: {counts[component]:,} != {expected:,}"
    if name in BF16_GB:
        gb, digits = BF16_GB[name]
        assert round(counts["transformer"] * 2 / 1e9, digits) == gb, f"{name}: not a {gb} GB bf16 file"
    return counts


def check_tiny_speed(folder: Path) -> float:
    start = time.perf_counter()
    build_components(folder, device="cpu")
    return time.perf_counter() - start


if __name__ == "__main__":
    for folder_name in FOLDERS:
        path = write_folder(folder_name)
        print(folder_name, {k: f"{v:,}" for k, v in check(folder_name, path).items()})
    for tiny in ("tiny-zimage", "tiny-flux2-klein"):
        print(f"{tiny} built with random weights in {check_tiny_speed(CONFIGS / tiny):.2f} s")
