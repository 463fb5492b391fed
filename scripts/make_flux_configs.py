"""Regenerate assets/configs/{flux1-dev,flux1-schnell,tiny-flux1,tiny-flux1-schnell} and check them.

The real folders hold the official diffusers configs of black-forest-labs/FLUX.1-dev and FLUX.1-schnell
(FluxPipeline: FluxTransformer2DModel, the 16-channel AutoencoderKL, CLIP ViT-L/14 text, T5 v1.1 XXL
encoder, FlowMatchEulerDiscreteScheduler). Each model is built on the meta device from the written JSON and
its parameter count is compared with the published one; the transformer is also counted a second way, from
BFL's own module definitions (flux/model.py: Linear, MLPEmbedder, Modulation, QKNorm, LastLayer), and the
BFL names and shapes that bfl_layout.diffusers_to_bfl gives the meta model must be exactly those. The tiny
folders are LoRA Studio's own FLUX.1 (dev-like with guidance, schnell-like without) for tests and the demo.
Run from the repo root: `python scripts/make_flux_configs.py`.
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

# published parameter counts (the transformer's are recomputed from BFL's modules below, not trusted)
PUBLISHED = {"flux1-dev": {"transformer": 11_901_408_320, "vae": 83_819_683, "text_encoder": 123_060_480,
                           "text_encoder_2": 4_762_310_656}}
PUBLISHED["flux1-schnell"] = dict(PUBLISHED["flux1-dev"], transformer=11_901_408_320 - 10_229_760)

REAL_TRANSFORMER = dict(num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                        in_channels=64, joint_attention_dim=4096, pooled_projection_dim=768,
                        axes_dims_rope=(16, 56, 56), patch_size=1)
# a tiny FLUX: the same blocks and conditioning; head_dim 16 = rope axes 4 + 6 + 6; T5 width 32 and CLIP
# width 32 feed joint_attention_dim and pooled_projection_dim; in_channels stays 64 (16 latents x 2 x 2)
TINY_TRANSFORMER = dict(num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                        in_channels=64, joint_attention_dim=32, pooled_projection_dim=32,
                        axes_dims_rope=(4, 6, 6), patch_size=1)
REAL_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                sample_size=1024)
TINY_VAE = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=64)
# google/t5-v1_1-xxl as FLUX.1's text_encoder_2/config.json has it. Written by hand, not from T5Config's
# to_dict: transformers 5 rewrites tie_word_embeddings to true (it means "scale decoder outputs" there).
T5_XXL = {"architectures": ["T5EncoderModel"], "classifier_dropout": 0.0, "d_ff": 10240, "d_kv": 64,
          "d_model": 4096, "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1,
          "eos_token_id": 1, "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0,
          "is_encoder_decoder": True, "is_gated_act": True, "layer_norm_epsilon": 1e-06, "model_type": "t5",
          "num_decoder_layers": 24, "num_heads": 64, "num_layers": 24, "output_past": True, "pad_token_id": 0,
          "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
          "tie_word_embeddings": False, "use_cache": True, "vocab_size": 32128}
# vocab stays 32128: the bundled T5 tokenizer emits ids up to 32099, and at width 32 the table is 1 M params
T5_TINY = dict(T5_XXL, d_ff=37, d_kv=8, d_model=32, num_decoder_layers=2, num_heads=4, num_layers=2)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1)
CLIP_TINY = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3,
                 projection_dim=32, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
# dev samples with resolution-dependent shift (mu from the image's token count); schnell with shift 1
DEV_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                     base_image_seq_len=256, max_image_seq_len=4096)
SCHNELL_SCHEDULER = dict(shift=1.0, use_dynamic_shifting=False)

FOLDERS = {
    "flux1-dev": (dict(REAL_TRANSFORMER, guidance_embeds=True), REAL_VAE, CLIP_L, T5_XXL, DEV_SCHEDULER),
    "flux1-schnell": (dict(REAL_TRANSFORMER, guidance_embeds=False), REAL_VAE, CLIP_L, T5_XXL,
                      SCHNELL_SCHEDULER),
    "tiny-flux1": (dict(TINY_TRANSFORMER, guidance_embeds=True), TINY_VAE, CLIP_TINY, T5_TINY, DEV_SCHEDULER),
    "tiny-flux1-schnell": (dict(TINY_TRANSFORMER, guidance_embeds=False), TINY_VAE, CLIP_TINY, T5_TINY,
                           SCHNELL_SCHEDULER),
}


def _clean(config, class_name: str) -> dict:
    """A diffusers config as its from_pretrained folder has it: no private keys but the class name."""
    out = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    return {"_class_name": class_name, **{k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}}


def transformer_config(kw: dict) -> dict:
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(**kw)
    return _clean(model.config, "FluxTransformer2DModel")


def vae_config(kw: dict) -> dict:
    from diffusers import AutoencoderKL

    # BFL's AE: 16 latent channels, no quant convs, latents = (x - shift) * scale
    with torch.device("meta"):
        model = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16,
                              down_block_types=("DownEncoderBlock2D",) * 4,
                              up_block_types=("UpDecoderBlock2D",) * 4,
                              scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                              use_post_quant_conv=False, force_upcast=True, **kw)
    return _clean(model.config, "AutoencoderKL")


def clip_config(kw: dict) -> dict:
    from transformers import CLIPTextConfig

    config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5, **kw).to_dict()
    config["architectures"] = ["CLIPTextModel"]
    for key in ["transformers_version", "_name_or_path", "return_dict", "output_hidden_states", "torch_dtype",
                "dtype"]:
        config.pop(key, None)
    return config


def scheduler_config(kw: dict) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return _clean(FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **kw).config,
                  "FlowMatchEulerDiscreteScheduler")


def model_index() -> dict:
    return {"_class_name": "FluxPipeline", "_diffusers_version": DIFFUSERS_VERSION,
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
            "text_encoder_2": ["transformers", "T5EncoderModel"],
            "tokenizer_2": ["transformers", "T5TokenizerFast"],
            "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
            "image_encoder": [None, None], "feature_extractor": [None, None]}


def write_folder(name: str) -> Path:
    transformer, vae, clip, t5, scheduler = FOLDERS[name]
    folder = CONFIGS / name
    files = {"model_index.json": model_index(), "transformer/config.json": transformer_config(transformer),
             "vae/config.json": vae_config(vae), "text_encoder/config.json": clip_config(clip),
             "text_encoder_2/config.json": t5, "scheduler/scheduler_config.json": scheduler_config(scheduler)}
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return folder


def build_components(folder: Path, device: str = "meta") -> dict:
    """transformer, vae, text_encoder, text_encoder_2 built from a config folder (random weights, or none
    on the meta device)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    def read(sub):
        return json.loads((folder / sub / "config.json").read_text())

    with torch.device(device):
        return {"transformer": FluxTransformer2DModel.from_config(read("transformer")),
                "vae": AutoencoderKL.from_config(read("vae")),
                "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder"))),
                "text_encoder_2": T5EncoderModel(T5Config.from_pretrained(str(folder / "text_encoder_2")))}


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())  # tied weights (T5's shared/embed_tokens) once


def bfl_reference_shapes(config: dict) -> dict[str, tuple]:
    """BFL FLUX.1 transformer names and shapes from BFL's module definitions (not from diffusers)."""
    h, heads = config["num_attention_heads"] * config["attention_head_dim"], config["attention_head_dim"]
    mlp, out = 4 * h, config["in_channels"]
    shapes = {}

    def linear(name, n_in, n_out):
        shapes.update({f"{name}.weight": (n_out, n_in), f"{name}.bias": (n_out,)})

    linear("img_in", config["in_channels"], h)
    linear("txt_in", config["joint_attention_dim"], h)
    for embedder, n_in in [("time_in", 256), ("vector_in", config["pooled_projection_dim"])] + (
            [("guidance_in", 256)] if config["guidance_embeds"] else []):
        linear(f"{embedder}.in_layer", n_in, h), linear(f"{embedder}.out_layer", h, h)
    for i in range(config["num_layers"]):
        for stream in ("img", "txt"):
            b = f"double_blocks.{i}.{stream}_"
            linear(b + "mod.lin", h, 6 * h), linear(b + "attn.qkv", h, 3 * h), linear(b + "attn.proj", h, h)
            linear(b + "mlp.0", h, mlp), linear(b + "mlp.2", mlp, h)
            shapes.update({f"{b}attn.norm.{n}.scale": (heads,) for n in ("query_norm", "key_norm")})
    for i in range(config["num_single_layers"]):
        b = f"single_blocks.{i}."
        linear(b + "linear1", h, 3 * h + mlp), linear(b + "linear2", h + mlp, h)
        linear(b + "modulation.lin", h, 3 * h)
        shapes.update({f"{b}norm.{n}.scale": (heads,) for n in ("query_norm", "key_norm")})
    linear("final_layer.linear", h, out), linear("final_layer.adaLN_modulation.1", h, 2 * h)
    return shapes


def check(name: str, folder: Path) -> dict[str, int]:
    from trainer.models.bfl_layout import diffusers_to_bfl

    parts = build_components(folder)
    counts = {k: count(m) for k, m in parts.items()}
    config = json.loads((folder / "transformer" / "config.json").read_text())
    reference = bfl_reference_shapes(config)
    mapped = diffusers_to_bfl({k: tuple(v.shape) for k, v in parts["transformer"].state_dict().items()})
    assert mapped == reference, f"{name}: diffusers_to_bfl disagrees with BFL's module shapes"
    bfl_count = sum(torch.Size(s).numel() for s in reference.values())
    assert bfl_count == counts["transformer"], f"{name}: BFL {bfl_count} != diffusers {counts['transformer']}"
    for component, expected in PUBLISHED.get(name, {}).items():
        assert counts[component] == expected, f"{name} {component}: {counts[component]:,} != {expected:,}"
    return counts


def check_tiny_speed(folder: Path) -> float:
    start = time.perf_counter()
    build_components(folder, device="cpu")
    return time.perf_counter() - start


if __name__ == "__main__":
    for folder_name in FOLDERS:
        path = write_folder(folder_name)
        print(folder_name, {k: f"{v:,}" for k, v in check(folder_name, path).items()})
    same = (CONFIGS / "flux1-dev/text_encoder/config.json").read_text() == json.dumps(
        json.load(open(CONFIGS / "sd15/text_encoder/config.json")), indent=2, sort_keys=True) + "\n"
    print("CLIP-L config identical to sd15's:", same)
    print(f"tiny-flux1 built with random weights in {check_tiny_speed(CONFIGS / 'tiny-flux1'):.2f} s")
