"""Load a diffusers model folder (model_index.json, unet/, vae/, text_encoder*/, tokenizer*/, scheduler/)
offline, with the same streaming reader as single files: each component straight into its final dtype."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer.models.precision import Precision
from trainer.models.streaming import TensorFile, load_component
from trainer.shared.errors import ModelFileError

# Preferred first: full-precision safetensors, then the fp16 variant, then sharded files, then pickles.
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors",
                "diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors",
                "diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json",
                "diffusion_pytorch_model.bin", "pytorch_model.bin")


def load_diffusers_folder(path: Path, names: tuple[str, ...], precision: Precision, device="cpu") -> dict:
    """Like load_single_file: each component in its final dtype, moved to `device` as soon as it is loaded.
    `names`: the text encoder folders the family has (text_encoder, text_encoder_2)."""
    parts = {"unet": _load(path / "unet", _unet, precision.dtype_for, "UNet").to(device),
             "vae": _load(path / "vae", _vae, precision.vae_dtype_for, "VAE").to(device)}
    for name in names:
        cls = _text_encoder_2 if name == "text_encoder_2" else _text_encoder
        parts[name] = _load(path / name, cls, precision.dtype_for, f"text encoder ({name})").to(device)
    parts.update(_tokenizers(path, names))
    from diffusers import DDPMScheduler

    parts["scheduler"] = DDPMScheduler.from_config(_json(path / "scheduler" / "scheduler_config.json"))
    return parts


def weights_file(folder: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / name).exists():
            return folder / name
    raise ModelFileError(f"{folder} holds no weights file (looked for {', '.join(WEIGHT_NAMES[:2])}, …)",
                         "the diffusers folder is incomplete: copy the whole model folder again")


def _load(folder: Path, build, dtype_for, name: str) -> torch.nn.Module:
    source = TensorFile.open(weights_file(folder))
    return load_component(lambda: build(folder), source, source.keys(), None, dtype_for, name)


def _unet(folder: Path):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(_json(folder / "config.json"))


def _vae(folder: Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(_json(folder / "config.json"))


def _text_encoder(folder: Path):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder), local_files_only=True))


def _text_encoder_2(folder: Path):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(str(folder), local_files_only=True))


def _tokenizers(path: Path, encoders: tuple) -> dict:
    from transformers import CLIPTokenizer

    out = {}
    for encoder in encoders:
        name = encoder.replace("text_encoder", "tokenizer")
        if (path / name).is_dir():
            out[name] = CLIPTokenizer.from_pretrained(str(path / name), local_files_only=True)
    return out


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"could not read {path}: {exc}",
                             "the diffusers folder is incomplete: copy the whole model folder again") from None
