"""Load a base model from `model.path`: a family's demo (demo:sd15, demo:sdxl, ...), a diffusers folder, or a
single file; the family (trainer.families) knows its components and how to read them.

Everything loads offline; config folders and tokenizers come from assets/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.models.memory import check_ram
from trainer.shared.errors import ModelFileError


@dataclass
class BaseModel:
    """The frozen parts a LoRA is trained against, plus what the loop needs to know about them."""

    family: object               # trainer.families.base.Family: everything that differs between families
    prediction_type: str         # epsilon | v_prediction
    unet: torch.nn.Module        # the denoiser (a UNet or a transformer, as the family says)
    vae: torch.nn.Module
    text_encoders: list
    tokenizers: list
    noise_scheduler: object      # the training noise schedule (DDPMScheduler for the SD families)
    source: str                  # what the user gave (path or demo:...)
    description: str = ""
    is_tiny: bool = False
    config_name: str = ""        # assets/configs folder describing this architecture (for verification)
    extra: dict = field(default_factory=dict)
    precision: object = None     # trainer.models.precision.Precision the frozen weights are kept in
    variant: str = ""            # the family's kind of checkpoint (FLUX.1 dev | schnell)
    train_guidance: float = 1.0  # model.train_guidance: the guidance input of guidance-distilled models
    # (text, token limit) -> conditioning, encoded before the text encoders left memory (families that
    # encode before the denoiser loads: trainer.families.t5_text)
    encoded: dict = field(default_factory=dict)
    pending_denoiser: object = None  # loads the denoiser (into RAM), when it waits for the captions to be encoded
    device: object = None            # where the components were loaded to (a pending denoiser goes there too)

    @property
    def arch(self) -> str:
        """The family id, as events, metadata and `inspect` name it."""
        return self.family.id

    def denoiser_config(self) -> dict:
        return dict(self.unet.config)

    def load_denoiser(self, keep_in_ram: bool = False) -> None:
        """Load a denoiser that waited (trainer.run.runtime encodes the captions first). `keep_in_ram`: leave it
        in RAM, for a caller that places it itself (block swap: only some of it ever goes to the GPU)."""
        if self.pending_denoiser is None:
            return
        denoiser = self.pending_denoiser()
        if not keep_in_ram:
            denoiser.to(self.device)
        self.unet, self.pending_denoiser = _frozen(denoiser, self.precision), None


def family_of(spec: str):
    """The family of `model.path` (a demo name, a file or a folder), read from headers only."""
    from trainer.families.registry import by_demo
    from trainer.models.detect import inspect_base_model

    family = by_demo(spec)
    if family is not None:
        return family
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelFileError(f"model not found: {path}",
                             "set model.path to a diffusers folder or a .safetensors/.ckpt checkpoint")
    return inspect_base_model(path).family


def load_base_model(spec: str, prediction_override: str = "auto", weight_dtype: str = "fp32",
                    device: str | torch.device = "cpu", files: dict | None = None,
                    defer_denoiser: bool = False) -> BaseModel:
    """The base model, its frozen weights already in `weight_dtype` (performance.weight_dtype) as it
    resolves on `device`. Nothing is held in a wider dtype on the way (see trainer/models/streaming.py).
    `files`: a family's other files named in the config (model.vae, model.clip_l, model.t5). With
    `defer_denoiser`, a family that encodes captions first leaves its denoiser to `model.load_denoiser()`."""
    from trainer.models.precision import resolve_precision
    from trainer.models.streaming import return_freed_memory

    precision = resolve_precision(weight_dtype, device)
    return_freed_memory()
    family, parts, prediction, desc, tiny, config_name, variant = _load_parts(spec, precision, device, files)
    if prediction_override != "auto":
        prediction = prediction_override
    scheduler = family.training_scheduler(parts["scheduler"], prediction)
    encoders = [_frozen(parts[name], precision) for name in family.text_encoders]
    tokenizers = [parts["tokenizer" if i == 0 else f"tokenizer_{i + 1}"] for i in range(len(encoders))]
    _frozen(parts["vae"], None)
    family.text.check_tokenizers(tokenizers, spec)
    model = BaseModel(family=family, prediction_type=prediction, unet=None, vae=parts["vae"],
                      text_encoders=encoders, tokenizers=tokenizers, noise_scheduler=scheduler,
                      source=spec, description=desc, is_tiny=tiny, config_name=config_name,
                      precision=precision, variant=variant, device=device)
    if callable(parts["unet"]) and not isinstance(parts["unet"], torch.nn.Module):
        model.pending_denoiser = parts["unet"]
        if not defer_denoiser:
            model.load_denoiser()
    else:
        model.unet = _frozen(parts["unet"], precision)
    return model


def released(module: torch.nn.Module | None) -> bool:
    """A module whose weights were given back (moved to the meta device) once its work was done."""
    return module is None or any(p.is_meta for p in module.parameters())


def _frozen(module: torch.nn.Module, precision) -> torch.nn.Module:
    """Frozen, in eval mode, fp8 layers computing in their compute dtype (precision None: the VAE)."""
    from trainer.models.precision import enable_fp8_compute

    module.requires_grad_(False)
    module.eval()
    if precision is not None and precision.fp8:
        enable_fp8_compute(module, precision.compute)
    return module


def _load_parts(spec: str, precision, device, files: dict | None) -> tuple:
    """(family, components, prediction type, description, is tiny, config folder name, variant)"""
    from trainer.families.registry import by_demo

    family = by_demo(spec)
    if family is None:
        return _load_user_model(Path(spec).expanduser(), precision, device, files)
    parts = _load_demo(family, precision)
    parts.update(family.tokenizers())
    prediction = family.fixed_prediction or parts["scheduler"].config.prediction_type
    config = family.config_name(prediction, tiny=True)
    return family, parts, prediction, f"built-in tiny {spec}", True, config, family.variant_of_config(config)


def _load_demo(family, precision) -> dict:
    parts = family.tiny_components()
    for name in ("unet", *family.text_encoders):
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


def _load_user_model(path: Path, precision, device, files: dict | None):
    from trainer.models.detect import inspect_base_model

    if not path.exists():
        raise ModelFileError(f"model not found: {path}",
                             "set model.path to a diffusers folder or a .safetensors/.ckpt checkpoint")
    info = inspect_base_model(path)
    check_ram(path, info, precision)
    family = info.family
    if info.format == "diffusers":
        parts = family.load_folder(path, info, precision, device, files)
    else:
        parts = family.load_single_file(path, info, precision, device, files)
    return (family, parts, info.prediction_type, info.summary(), info.size == "tiny", info.config_name(),
            info.variant)
