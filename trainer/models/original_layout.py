"""Convert diffusers-layout components to the ORIGINAL single-file layout (A1111 / civitai checkpoints).

diffusers only converts original -> diffusers. We need the other direction to write checkpoints that A1111
and ComfyUI load (merging a LoRA into a base), for the benchmarks' real-size random-weight files, and for the
tests' tiny single files. The key rules are
the inverse of diffusers' `single_file_utils` conversions (LDM/SGM UNet and VAE names, the HF CLIP layout
under `cond_stage_model.transformer`, OpenCLIP's fused-attention layout under `...model.`).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from trainer.export.kohya import sgm_unet_name

UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
PREFIX = {"sd15": ("cond_stage_model.transformer.", None),
          "sd2": (None, "cond_stage_model.model."),
          "sdxl": ("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model.")}


def to_original_state_dict(components: dict, arch: str) -> dict[str, torch.Tensor]:
    out = {}
    unet = components["unet"]
    for key, tensor in unet.state_dict().items():
        out["model.diffusion_model." + unet_key(key, dict(unet.config))] = tensor
    for key, tensor in components["vae"].state_dict().items():
        out["first_stage_model." + vae_key(key)] = _vae_tensor(key, tensor)
    hf_prefix, openclip_prefix = PREFIX[arch]
    if hf_prefix:
        for key, tensor in components["text_encoder"].state_dict().items():
            out[hf_prefix + _with_text_model(key)] = tensor
    if openclip_prefix:
        encoder = components["text_encoder_2" if arch == "sdxl" else "text_encoder"]
        out.update({openclip_prefix + k: v for k, v in openclip_state_dict(encoder, arch == "sd2").items()})
    return {k: v.clone().contiguous() for k, v in out.items()}


def unet_key(key: str, config: dict) -> str:
    module, param = key.rsplit(".", 1)
    if module in UNET_TOP:
        return f"{UNET_TOP[module]}.{param}"
    return f"{sgm_unet_name(module, config)}.{param}"


def vae_key(key: str) -> str:
    key = key.replace("conv_norm_out", "norm_out")
    key = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m[1]) + 1}", key)
    key = key.replace("mid_block.attentions.0", "mid.attn_1")
    key = re.sub(r"down_blocks\.(\d+)\.resnets\.(\d+)", r"down.\1.block.\2", key)
    key = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0", r"down.\1.downsample", key)
    key = re.sub(r"up_blocks\.(\d+)\.resnets\.(\d+)", lambda m: f"up.{3 - int(m[1])}.block.{m[2]}", key)
    key = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0", lambda m: f"up.{3 - int(m[1])}.upsample", key)
    key = key.replace("conv_shortcut", "nin_shortcut")
    for new, old in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                     ("to_out.0", "proj_out")):
        key = key.replace(f"attn_1.{new}.", f"attn_1.{old}.")
    return key


def _vae_tensor(key: str, tensor: torch.Tensor) -> torch.Tensor:
    # the original VAE's mid-block attention uses 1x1 convolutions where diffusers uses linear layers
    if "mid_block.attentions" in key and key.endswith("weight") and tensor.dim() == 2:
        return tensor[:, :, None, None]
    return tensor


def _with_text_model(key: str) -> str:
    return key if key.startswith("text_model.") else "text_model." + key


def openclip_state_dict(encoder, extra_layer: bool) -> dict[str, torch.Tensor]:
    """HF CLIP text model -> OpenCLIP layout (fused q/k/v as in_proj). SD2 files carry one more layer
    than diffusers uses (SD2 conditions on the penultimate layer), so `extra_layer` appends a copy."""
    sd = {k.removeprefix("text_model."): v for k, v in encoder.state_dict().items()}
    out = {"token_embedding.weight": sd["embeddings.token_embedding.weight"],
           "positional_embedding": sd["embeddings.position_embedding.weight"],
           "ln_final.weight": sd["final_layer_norm.weight"], "ln_final.bias": sd["final_layer_norm.bias"]}
    if "text_projection.weight" in sd:
        out["text_projection"] = sd["text_projection.weight"].T
    layers = encoder.config.num_hidden_layers
    for i in range(layers):
        out.update(_openclip_layer(sd, i, i))
    if extra_layer:
        out.update(_openclip_layer(sd, layers - 1, layers))
    return out


def _openclip_layer(sd: dict, src: int, dst: int) -> dict[str, torch.Tensor]:
    p, q = f"encoder.layers.{src}.", f"transformer.resblocks.{dst}."
    attn = [f"{p}self_attn.{n}_proj" for n in "qkv"]
    return {
        q + "attn.in_proj_weight": torch.cat([sd[a + ".weight"] for a in attn]),
        q + "attn.in_proj_bias": torch.cat([sd[a + ".bias"] for a in attn]),
        q + "attn.out_proj.weight": sd[p + "self_attn.out_proj.weight"],
        q + "attn.out_proj.bias": sd[p + "self_attn.out_proj.bias"],
        q + "ln_1.weight": sd[p + "layer_norm1.weight"], q + "ln_1.bias": sd[p + "layer_norm1.bias"],
        q + "ln_2.weight": sd[p + "layer_norm2.weight"], q + "ln_2.bias": sd[p + "layer_norm2.bias"],
        q + "mlp.c_fc.weight": sd[p + "mlp.fc1.weight"], q + "mlp.c_fc.bias": sd[p + "mlp.fc1.bias"],
        q + "mlp.c_proj.weight": sd[p + "mlp.fc2.weight"], q + "mlp.c_proj.bias": sd[p + "mlp.fc2.bias"],
    }


def save_original_checkpoint(components: dict, arch: str, path: Path, fmt: str = "safetensors",
                             metadata: dict | None = None) -> Path:
    state = to_original_state_dict(components, arch)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata=metadata)
    else:
        torch.save({"state_dict": state, "global_step": 1}, path)
    return Path(path)
