"""Load an A1111/civitai-style single-file checkpoint offline, component by component, into its final dtype.

The key conversion is diffusers' own (`single_file_utils`: LDM/SGM UNet and VAE, HF CLIP, OpenCLIP); the
configs come from our JSON folders in assets/configs and the tokenizers from assets/, so nothing is fetched
from a hub. trainer/models/streaming.py does the reading: no whole-model copy in fp32 (or any dtype) exists
at any moment. Legacy pickles are loaded with weights_only=True and converted in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.models.precision import Precision
from trainer.models.streaming import TensorFile, load_component

UNET_PREFIX, VAE_PREFIX = "model.diffusion_model.", "first_stage_model."
LOAD_ORDER = ("unet", "text_encoder_2", "text_encoder", "vae")  # biggest first: the peak is the model itself


def load_single_file(path: Path, config_folder: Path, text_encoders: list[tuple[str, str, str]],
                     precision: Precision, device="cpu", tokenizers: dict | None = None) -> dict:
    """unet, vae, text_encoder(s) and scheduler of an LDM-layout `path`, frozen weights in `precision`, plus
    `tokenizers` (a single file has none). `text_encoders`: (component, key prefix, kind) as the family
    lays them out (trainer.families.ldm_layout.LdmLayout). Each component moves to `device` as soon as it is
    loaded, so RAM holds one component at a time."""
    source = TensorFile.open(path)
    keys = source.keys()
    loaders = _component_loaders(config_folder, text_encoders, precision)
    parts = {c: loaders[c](source, keys).to(device) for c in LOAD_ORDER if c in loaders}
    parts.update(tokenizers or {}, scheduler=_scheduler(config_folder))
    return parts


def _component_loaders(folder: Path, text_encoders: list, precision: Precision) -> dict:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    unet_config, vae_config = _read(folder / "unet"), _read(folder / "vae")
    loaders = {
        "unet": lambda src, keys: load_component(
            lambda: _diffusers_model("UNet2DConditionModel", unet_config), src, _under(keys, UNET_PREFIX),
            lambda sd: convert_ldm_unet_checkpoint(sd, unet_config), precision.dtype_for, "UNet"),
        "vae": lambda src, keys: load_component(
            lambda: _diffusers_model("AutoencoderKL", vae_config), src, _under(keys, VAE_PREFIX),
            lambda sd: convert_ldm_vae_checkpoint(sd, vae_config), precision.vae_dtype_for, "VAE"),
    }
    for component, prefix, kind in text_encoders:
        loaders[component] = _text_encoder_loader(folder / component, prefix, kind, precision)
    return loaders


def _text_encoder_loader(folder: Path, prefix: str, kind: str, precision: Precision):
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig.from_pretrained(str(folder), local_files_only=True)
    cls = CLIPTextModelWithProjection if kind == "open_clip_projection" else CLIPTextModel
    built = {}

    def build():
        built["model"] = cls(config)
        return built["model"]

    def convert(sd):
        if kind == "clip":
            return convert_ldm_clip_checkpoint(sd, remove_prefix=prefix)
        return convert_open_clip_checkpoint(built["model"], sd, prefix=prefix)

    return lambda src, keys: load_component(build, src, _under(keys, prefix), convert, precision.dtype_for,
                                            f"text encoder ({folder.name})")


def _diffusers_model(class_name: str, config: dict):
    import diffusers

    return getattr(diffusers, class_name).from_config(config)


def _under(keys: list[str], prefix: str) -> list[str]:
    return [k for k in keys if k.startswith(prefix)]


def _read(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _scheduler(folder: Path):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
