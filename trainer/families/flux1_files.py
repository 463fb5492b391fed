"""FLUX.1's files: finding the AE, CLIP-L and T5 beside the transformer (or in ComfyUI's folders), loading
the four of them through the streaming loader, packing latents, and its kohya LoRA layout (BFL names, the
split q/k/v pieces stacked into the fused layers). The family module (trainer/families/flux1.py) uses these.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer.families.companions import Role
from trainer.families.companions import companions as shared_companions
from trainer.families.companions import find_files as shared_find_files
from trainer.shared.errors import ModelFileError

PREFIX = "model.diffusion_model."
# role -> (config key, usual file names, ComfyUI folders relative to the transformer's models/ folder)
ROLES = {
    "vae": Role("model.vae", ("ae.safetensors", "flux1-ae.safetensors", "ae.sft"), ("vae",), "vae."),
    "clip_l": Role("model.clip_l", ("clip_l.safetensors",), ("text_encoders", "clip"),
                   "text_encoders.clip_l.transformer."),
    "t5": Role("model.t5", ("t5xxl_fp16.safetensors", "t5xxl_fp8_e4m3fn.safetensors", "t5xxl_bf16.safetensors",
                            "t5xxl_fp8_e4m3fn_scaled.safetensors"), ("text_encoders", "clip"),
               "text_encoders.t5xxl.transformer."),
}


def companions(model: Path, given: dict) -> tuple[dict[str, Path], list[str]]:
    """({role: file} found for the AE, CLIP-L and T5, [what is missing, said for people])."""
    return shared_companions(model, given, ROLES)


def find_files(model: Path, given: dict) -> dict[str, Path]:
    """{role: file} for the AE, CLIP-L and T5 (`companions`); missing ones are one error naming each."""
    return shared_find_files(model, given, ROLES, "FLUX.1")


def refuse_other_flux(path: Path, shapes: dict, is_flux1: bool, img_in: int | None) -> None:
    # FLUX.2 files are the FLUX.2 klein family's to take or refuse (trainer/families/flux2_klein.py)
    if is_flux1 and img_in in (384, 128):
        kind = "Fill (inpainting)" if img_in == 384 else "Depth/Canny (control)"
        raise ModelFileError(f"{path} is a FLUX.1 {kind} model", "train on flux1-dev.safetensors or "
                             "flux1-schnell.safetensors; LoRAs made there work with these variants too")


def build_components(configs: Path) -> dict:
    """transformer ("unet", the denoiser), AE, CLIP-L, T5 and scheduler of a FLUX config folder."""
    parts = {name: _build_one(configs, name) for name in ("unet", "vae", "text_encoder", "text_encoder_2")}
    return {**parts, "scheduler": build_scheduler(configs)}


def _json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_flux_files(family, path: Path, info, precision, device, given: dict) -> dict:
    """The four files: AE, CLIP-L and T5 now; the transformer as a deferred load (a function), so T5 can
    encode every caption and leave memory first (trainer.models.load decides when it loads)."""
    from trainer.models.streaming import TensorFile

    files = find_files(path, given)
    configs = info.config_folder()

    def source(role: str):  # a file of its own, or its part of an all-in-one checkpoint
        return TensorFile.open(files[role]).within(ROLES[role].embedded) if files[role] == path else None

    parts = {"vae": _load(configs, "vae", files["vae"], precision.vae_dtype_for, "AE", source("vae")).to(device),
             "text_encoder": _load(configs, "text_encoder", files["clip_l"], precision.dtype_for, "CLIP-L",
                                   source("clip_l")).to(device),
             "text_encoder_2": _load(configs, "text_encoder_2", files["t5"], precision.dtype_for, "T5",
                                     source("t5")).to(device),
             "scheduler": build_scheduler(configs), **family.tokenizers()}
    parts["unet"] = lambda: _load(configs, "transformer", path, precision.dtype_for, "transformer",
                                  TensorFile.open(path))
    return parts


def load_flux_folder(family, path: Path, info, precision, device) -> dict:
    from trainer.models.folder import weights_file

    parts = {"scheduler": build_scheduler(path), **family.tokenizers()}
    for name, role in (("vae", "AE"), ("text_encoder", "CLIP-L"), ("text_encoder_2", "T5")):
        dtype_for = precision.vae_dtype_for if name == "vae" else precision.dtype_for
        parts[name] = _load(path, name, weights_file(path / name), dtype_for, role, converter=False).to(device)
    parts["unet"] = lambda: _load(path, "transformer", weights_file(path / "transformer"), precision.dtype_for,
                                  "transformer", converter=False)
    return parts


def build_scheduler(configs: Path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(_json(configs / "scheduler" / "scheduler_config.json"))


def _load(configs: Path, name: str, file: Path, dtype_for, role: str, source=None, converter: bool = True):
    from trainer.models.streaming import TensorFile, load_component

    source = source or TensorFile.open(file)
    keys = source.keys()
    part = "unet" if name == "transformer" else name
    convert = _converter(name, configs, keys) if converter else None
    if name == "transformer":
        keys = [k for k in keys if k.removeprefix(PREFIX).split(".")[0] in _TRANSFORMER_ROOTS]
    return load_component(lambda: _build_one(configs, part), source, keys, convert, dtype_for,
                          f"FLUX.1 {role} ({file.name})")


_TRANSFORMER_ROOTS = {"img_in", "txt_in", "time_in", "vector_in", "guidance_in", "double_blocks", "single_blocks",
                      "final_layer"}


def _build_one(configs: Path, part: str):
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    if part == "unet":
        return FluxTransformer2DModel.from_config(_json(configs / "transformer" / "config.json"))
    if part == "vae":
        return AutoencoderKL.from_config(_json(configs / "vae" / "config.json"))
    if part == "text_encoder":
        return CLIPTextModel(CLIPTextConfig.from_dict(_json(configs / "text_encoder" / "config.json")))
    return T5EncoderModel(T5Config.from_dict(_json(configs / "text_encoder_2" / "config.json")))


def _converter(name: str, configs: Path, keys: list[str]):
    from trainer.models.streaming import rows_only

    if name == "transformer":
        from trainer.models.bfl_layout import bfl_to_diffusers

        return rows_only(lambda state: bfl_to_diffusers(dict(state)))  # it edits the dict it is given
    if name == "vae":
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        vae_config = _json(configs / "vae" / "config.json")
        return lambda state: convert_ldm_vae_checkpoint(dict(state), vae_config)
    if name == "text_encoder_2":
        return _tie_t5
    return None


def _tie_t5(state: dict) -> dict:
    """T5 files hold `shared.weight`, and some a copy as `encoder.embed_tokens.weight`: the model has both."""
    out = dict(state)
    if "encoder.embed_tokens.weight" not in out and "shared.weight" in out:
        out["encoder.embed_tokens.weight"] = out["shared.weight"]
    return out


# ---- latents -------------------------------------------------------------------------------------------
def pack(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> (B, H/2·W/2, 4C) patches and their (row, column) position ids, as FluxPipeline packs."""
    b, c, h, w = latents.shape
    packed = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)
    ids = torch.zeros(h // 2, w // 2, 3, device=latents.device, dtype=latents.dtype)
    ids[..., 1] += torch.arange(h // 2, device=latents.device, dtype=latents.dtype)[:, None]
    ids[..., 2] += torch.arange(w // 2, device=latents.device, dtype=latents.dtype)[None, :]
    return packed, ids.reshape(-1, 3)


def unpack(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    b, c, h, w = shape
    return packed.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
