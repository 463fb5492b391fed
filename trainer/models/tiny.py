"""The built-in tiny SD1.5-, SD2- and SDXL-architecture models with random weights.

Same block types, attention layout and conditioning as the real models, a few hundred times fewer channels,
built from the JSON configs in assets/configs/tiny-* in well under a second. They let the demo, the GUI's
"try it" path and every test run the real code end to end on a CPU. They produce noise images.
"""

from __future__ import annotations

import json

import torch

from trainer.models.assets import config_folder

TINY_NAMES = {"sd15": "tiny-sd15", "sd2": "tiny-sd2", "sdxl": "tiny-sdxl"}


def _read(folder, sub: str, file: str = "config.json") -> dict:
    return json.loads((folder / sub / file).read_text())


def build_tiny_components(arch: str, seed: int = 0) -> dict:
    """Random-weight unet, vae, text encoder(s) and scheduler for `arch` in sd15 | sd2 | sdxl."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = config_folder(TINY_NAMES[arch])
    torch.manual_seed(seed)
    parts = {
        "unet": UNet2DConditionModel.from_config(_read(folder, "unet")),
        "vae": AutoencoderKL.from_config(_read(folder, "vae")),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_dict(_read(folder, "text_encoder"))),
        "scheduler": DDPMScheduler.from_config(_read(folder, "scheduler", "scheduler_config.json")),
    }
    if arch == "sdxl":
        cfg2 = CLIPTextConfig.from_dict(_read(folder, "text_encoder_2"))
        parts["text_encoder_2"] = CLIPTextModelWithProjection(cfg2)
    return parts
