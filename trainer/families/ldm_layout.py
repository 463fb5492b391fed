"""Convert diffusers-layout components to the ORIGINAL single-file layout (A1111 / civitai checkpoints).

diffusers only converts original -> diffusers. We need the other direction to write checkpoints that A1111
and ComfyUI load (merging a LoRA into a base), for the benchmarks' real-size random-weight files, and for the
tests' tiny single files. The key rules are
the inverse of diffusers' `single_file_utils` conversions (LDM/SGM UNet and VAE names, the HF CLIP layout
under `cond_stage_model.transformer`, OpenCLIP's fused-attention layout under `...model.`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_RESNET_TO_SGM = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
                  "conv_shortcut": "skip_connection", "norm1": "in_layers.0", "norm2": "out_layers.0"}


def sgm_unet_name(name: str, unet_config: dict) -> str:
    """Diffusers UNet module path -> original SGM path (input_blocks / middle_block / output_blocks)."""
    layers = unet_config["layers_per_block"]
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.?(.*)", name)
    if m:
        block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "downsamplers":
            return f"input_blocks.{(block + 1) * (layers + 1)}.0.op"
        index = 1 + block * (layers + 1) + j
        return _join(f"input_blocks.{index}", kind, rest)
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.?(.*)", name)
    if m:
        index = 1 if m[1] == "attentions" else 2 * int(m[2])
        return _join_inner(f"middle_block.{index}", m[1], m[3])
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.?(.*)", name)
    if m:
        block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "upsamplers":
            has_attn = "CrossAttn" in unet_config["up_block_types"][block]
            return f"output_blocks.{block * (layers + 1) + layers}.{2 if has_attn else 1}.conv"
        return _join(f"output_blocks.{block * (layers + 1) + j}", kind, rest)
    raise ValueError(f"no SGM name for UNet module '{name}'")


def _join(prefix: str, kind: str, rest: str) -> str:
    return _join_inner(f"{prefix}.{0 if kind == 'resnets' else 1}", kind, rest)


def _join_inner(prefix: str, kind: str, rest: str) -> str:
    if kind == "resnets":
        rest = _RESNET_TO_SGM.get(rest, rest)
    return f"{prefix}.{rest}" if rest else prefix




@dataclass(frozen=True)
class LdmLayout:
    """Where a UNet family's text encoders sit in its single file (the UNet and VAE are the same in all)."""

    clip_prefix: str | None           # HF CLIP layout (SD1.x; SDXL's first encoder)
    openclip_prefix: str | None       # OpenCLIP layout (SD2.x; SDXL's second encoder)
    openclip_component: str = "text_encoder"
    openclip_extra_layer: bool = False  # SD2 files carry one more layer than diffusers uses

    def text_encoders(self) -> list[tuple[str, str, str]]:
        """(component, file prefix, kind) for the single-file loader; kind picks the class and converter."""
        out = []
        if self.clip_prefix:
            out.append(("text_encoder", self.clip_prefix, "clip"))
        if self.openclip_prefix:
            kind = "open_clip_projection" if self.openclip_component == "text_encoder_2" else "open_clip"
            out.append((self.openclip_component, self.openclip_prefix, kind))
        return out


def layout_of(arch: str) -> LdmLayout:
    """The layout of a family id or config name (sd15, sd2, sdxl, tiny-…): tests and benches name it so."""
    from trainer.families.registry import find

    return find(arch).ldm


def to_original_state_dict(components: dict, layout: LdmLayout | str) -> dict[str, torch.Tensor]:
    layout = layout_of(layout) if isinstance(layout, str) else layout
    out = {}
    unet = components["unet"]
    for key, tensor in unet.state_dict().items():
        out["model.diffusion_model." + unet_key(key, dict(unet.config))] = tensor
    for key, tensor in components["vae"].state_dict().items():
        out["first_stage_model." + vae_key(key)] = _vae_tensor(key, tensor)
    if layout.clip_prefix:
        for key, tensor in components["text_encoder"].state_dict().items():
            out[layout.clip_prefix + _with_text_model(key)] = tensor
    if layout.openclip_prefix:
        encoder = components[layout.openclip_component]
        out.update({layout.openclip_prefix + k: v
                    for k, v in openclip_state_dict(encoder, layout.openclip_extra_layer).items()})
    return {k: v.clone().contiguous() for k, v in out.items()}


def vae_file_state(vae) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL in the original LDM names without a prefix, as FLUX's ae.safetensors is."""
    return {vae_key(k): _vae_tensor(k, v).clone().contiguous() for k, v in vae.state_dict().items()}


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


def save_original_checkpoint(components: dict, layout: LdmLayout | str, path: Path, fmt: str = "safetensors",
                             metadata: dict | None = None) -> Path:
    state = to_original_state_dict(components, layout)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata=metadata)
    else:
        torch.save({"state_dict": state, "global_step": 1}, path)
    return Path(path)


_OPENCLIP = {"self_attn.out_proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_QKV = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}


def original_key(layout: LdmLayout, component: str, module: str, unet_config: dict) -> tuple[str, int | None]:
    """(original checkpoint key of the module's weight, which third of a fused q/k/v `in_proj` or None):
    the inverse of diffusers' single-file conversion, for merging a LoRA into a single file."""
    from trainer.shared.errors import UserError

    if component == "unet":
        return "model.diffusion_model." + unet_key(module + ".weight", unet_config), None
    if component == "text_encoder" and layout.clip_prefix:
        return f"{layout.clip_prefix}text_model.{module.removeprefix('text_model.')}.weight", None
    m = re.match(r"(?:text_model\.)?encoder\.layers\.(\d+)\.(.+)$", module)
    rest = m[2] if m else ""
    block = f"{layout.openclip_prefix}transformer.resblocks.{m[1] if m else '?'}."
    if rest in _QKV:
        return block + "attn.in_proj_weight", _QKV[rest]
    if rest in _OPENCLIP:
        return f"{block}{_OPENCLIP[rest]}.weight", None
    raise UserError(f"no original-layout key for {component}.{module}",
                    "baking supports LoRAs on attention and MLP layers of the text encoders")
