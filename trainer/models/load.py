"""Load a base model from `model.path`: demo:sd15 / demo:sdxl, a diffusers folder, or a single file.

Everything loads offline; config folders and tokenizers come from assets/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.errors import ModelFileError
from trainer.models.assets import load_tokenizer

DEMO_ARCHS = {"demo:sd15": "sd15", "demo:sd2": "sd2", "demo:sdxl": "sdxl"}
ARCH_FAMILY = {"sd15": "sd1", "sd2": "sd2", "sdxl": "sdxl"}


@dataclass
class BaseModel:
    """The frozen parts a LoRA is trained against, plus what the loop needs to know about them."""

    arch: str                    # sd1 | sd2 | sdxl
    prediction_type: str         # epsilon | v_prediction
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list
    tokenizers: list
    noise_scheduler: object      # DDPMScheduler: the training noise schedule
    source: str                  # what the user gave (path or demo:...)
    description: str = ""
    is_tiny: bool = False
    config_name: str = ""        # assets/configs folder describing this architecture (for verification)
    extra: dict = field(default_factory=dict)

    @property
    def is_sdxl(self) -> bool:
        return self.arch == "sdxl"

    @property
    def is_v2(self) -> bool:
        return self.arch == "sd2"


def load_base_model(spec: str, prediction_override: str = "auto") -> BaseModel:
    if spec in DEMO_ARCHS:
        parts, arch, desc, tiny = _load_demo(spec), ARCH_FAMILY[DEMO_ARCHS[spec]], f"built-in tiny {spec}", True
        prediction, config_name = parts["scheduler"].config.prediction_type, f"tiny-{DEMO_ARCHS[spec]}"
    else:
        parts, arch, prediction, desc, tiny, config_name = _load_user_model(Path(spec).expanduser())
    if prediction_override != "auto":
        prediction = prediction_override
    scheduler = _training_scheduler(parts["scheduler"], prediction)
    encoders = [parts["text_encoder"]] + ([parts["text_encoder_2"]] if "text_encoder_2" in parts else [])
    tokenizers = [parts.get("tokenizer") or load_tokenizer()]
    if len(encoders) == 2:
        tokenizers.append(parts.get("tokenizer_2") or load_tokenizer(second=True))
    for module in [parts["unet"], parts["vae"], *encoders]:
        module.requires_grad_(False)
    _check_tokenizers(tokenizers, spec)
    return BaseModel(arch=arch, prediction_type=prediction, unet=parts["unet"], vae=parts["vae"],
                     text_encoders=encoders, tokenizers=tokenizers, noise_scheduler=scheduler,
                     source=spec, description=desc, is_tiny=tiny, config_name=config_name)


def _load_demo(spec: str) -> dict:
    from trainer.models.tiny import build_tiny_components

    return build_tiny_components(DEMO_ARCHS[spec])


def _training_scheduler(scheduler, prediction: str):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler.config, prediction_type=prediction)


def _load_user_model(path: Path):
    from trainer.models.detect import inspect_base_model

    if not path.exists():
        raise ModelFileError(f"model not found: {path}",
                             "set model.path to a diffusers folder or a .safetensors/.ckpt checkpoint")
    info = inspect_base_model(path)
    if info.format == "diffusers":
        parts = _load_diffusers_folder(path, info.arch)
    else:
        from trainer.models.assets import config_folder
        from trainer.models.single_file import load_single_file

        parts = load_single_file(path, config_folder(info.config_name()), info.arch, info.prediction_type)
    return parts, info.arch, info.prediction_type, info.summary(), info.size == "tiny", info.config_name()


def _load_diffusers_folder(path: Path, arch: str) -> dict:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline
    extra = {} if arch == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                       "requires_safety_checker": False}
    try:
        pipe = cls.from_pretrained(str(path), local_files_only=True, **extra)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"could not load the diffusers model in {path}: {exc}",
                             "the folder must hold model_index.json and unet/vae/text_encoder weights") from exc
    return {name: getattr(pipe, name) for name in
            ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
            if getattr(pipe, name, None) is not None}


def _check_tokenizers(tokenizers: list, spec: str) -> None:
    from trainer.models.assets import CLIP_VOCAB_SIZE

    for tokenizer in tokenizers:
        if len(tokenizer) != CLIP_VOCAB_SIZE:
            raise ModelFileError(f"the tokenizer of {spec} has {len(tokenizer)} tokens, expected {CLIP_VOCAB_SIZE}",
                                 "its tokenizer files are damaged: copy the model folder again")
