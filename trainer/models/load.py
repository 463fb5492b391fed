"""Load a base model from `model.path`: demo:sd15 / demo:sdxl, a diffusers folder, or a single file.

Everything loads offline; config folders and tokenizers come from assets/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.errors import ModelFileError
from trainer.models.assets import load_tokenizer
from trainer.models.memory import check_ram

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
    precision: object = None     # trainer.models.precision.Precision the frozen weights are kept in

    @property
    def is_sdxl(self) -> bool:
        return self.arch == "sdxl"

    @property
    def is_v2(self) -> bool:
        return self.arch == "sd2"


def load_base_model(spec: str, prediction_override: str = "auto", weight_dtype: str = "fp32",
                    device: str | torch.device = "cpu") -> BaseModel:
    """The base model, its frozen weights already in `weight_dtype` (performance.weight_dtype) as it
    resolves on `device`. Nothing is held in a wider dtype on the way (see trainer/models/streaming.py)."""
    from trainer.models.precision import enable_fp8_compute, resolve_precision
    from trainer.models.streaming import return_freed_memory

    precision = resolve_precision(weight_dtype, device)
    return_freed_memory()
    parts, arch, prediction, desc, tiny, config_name = _load_parts(spec, precision, device)
    if prediction_override != "auto":
        prediction = prediction_override
    scheduler = _training_scheduler(parts["scheduler"], prediction)
    encoders = [parts["text_encoder"]] + ([parts["text_encoder_2"]] if "text_encoder_2" in parts else [])
    tokenizers = [parts.get("tokenizer") or load_tokenizer()]
    if len(encoders) == 2:
        tokenizers.append(parts.get("tokenizer_2") or load_tokenizer(second=True))
    for module in [parts["unet"], parts["vae"], *encoders]:
        module.requires_grad_(False)
        module.eval()
    if precision.fp8:
        for module in [parts["unet"], *encoders]:
            enable_fp8_compute(module, precision.compute)
    _check_tokenizers(tokenizers, spec)
    return BaseModel(arch=arch, prediction_type=prediction, unet=parts["unet"], vae=parts["vae"],
                     text_encoders=encoders, tokenizers=tokenizers, noise_scheduler=scheduler,
                     source=spec, description=desc, is_tiny=tiny, config_name=config_name,
                     precision=precision)


def _load_parts(spec: str, precision, device) -> tuple:
    """(components, arch, prediction type, description, is tiny, config folder name)"""
    if spec not in DEMO_ARCHS:
        return _load_user_model(Path(spec).expanduser(), precision, device)
    parts = _load_demo(spec, precision)
    return (parts, ARCH_FAMILY[DEMO_ARCHS[spec]], parts["scheduler"].config.prediction_type,
            f"built-in tiny {spec}", True, f"tiny-{DEMO_ARCHS[spec]}")


def _load_demo(spec: str, precision) -> dict:
    from trainer.models.tiny import build_tiny_components

    parts = build_tiny_components(DEMO_ARCHS[spec])
    for name in ("unet", "text_encoder", "text_encoder_2"):
        if name in parts:
            _cast_in_place(parts[name], precision)
    parts["vae"].to(precision.vae)
    return parts


def _cast_in_place(module: torch.nn.Module, precision) -> None:
    """The tiny models are built in fp32 (a few MB); give them the dtypes a real model would load in."""
    module.to(precision.compute)
    for key, param in module.named_parameters():
        wanted = precision.dtype_for(module, key)
        if param.dtype != wanted:
            param.data = param.data.to(wanted)


def _training_scheduler(scheduler, prediction: str):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler.config, prediction_type=prediction)


def _load_user_model(path: Path, precision, device):
    from trainer.models.detect import inspect_base_model

    if not path.exists():
        raise ModelFileError(f"model not found: {path}",
                             "set model.path to a diffusers folder or a .safetensors/.ckpt checkpoint")
    info = inspect_base_model(path)
    check_ram(path, info, precision)
    if info.format == "diffusers":
        from trainer.models.folder import load_diffusers_folder

        parts = load_diffusers_folder(path, info.arch, precision, device)
    else:
        from trainer.models.assets import config_folder
        from trainer.models.single_file import load_single_file

        parts = load_single_file(path, config_folder(info.config_name()), info.arch, precision, device)
    return parts, info.arch, info.prediction_type, info.summary(), info.size == "tiny", info.config_name()


def _check_tokenizers(tokenizers: list, spec: str) -> None:
    from trainer.models.assets import CLIP_VOCAB_SIZE

    for tokenizer in tokenizers:
        if len(tokenizer) != CLIP_VOCAB_SIZE:
            raise ModelFileError(f"the tokenizer of {spec} has {len(tokenizer)} tokens, expected {CLIP_VOCAB_SIZE}",
                                 "its tokenizer files are damaged: copy the model folder again")
