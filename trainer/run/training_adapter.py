"""`model.training_adapter`: a LoRA that un-distills a step-distilled model (FLUX.1 schnell, Z-Image Turbo)
while a run trains on it (ostris' "training adapters" for ai-toolkit).

A LoRA trained on a distilled model directly learns to undo the distillation too (blurry, grey images). With
the adapter applied, frozen, the base behaves like the undistilled model at every step; the trained LoRA learns
only the user's subject, and, used without the adapter, works on the distilled model at its few steps.

How it is applied: as a second, frozen peft adapter (NAME) on the denoiser, beside the trained one. Merging its
delta into the base weights instead would round it away in bf16/fp8-stored weights (an un-distilling delta is
small next to the weights) and would have to be undone for every preview. Beside them it costs a few MB of
extra layers; it can be switched off for previews; and the trained adapter's weights, the optimizer, the saved
checkpoints, the resume state and the exported file never see it, because all of them go through peft's
`default` adapter only (trainer.lora.inject).

The file is read through the family's own LoRA reader (`peft_components`), the one `generate` uses, so every
layout users download (kohya, BFL, diffusers) is understood.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from trainer.shared.errors import ConfigError, ModelFileError
from trainer.shared.fsutil import sha256_of

KEY = "model.training_adapter"
NAME = "training_adapter"  # its peft adapter name; the trained one is trainer.lora.ADAPTER
_LORA_PARTS = ("lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up")
WHERE = ("ai-toolkit users find them on Hugging Face: ostris/FLUX.1-schnell-training-adapter, "
         "ostris/zimage_turbo_training_adapter")


@dataclass(frozen=True)
class AdapterFile:
    """The training adapter as checked before the model loads, and what identifies it on resume."""

    path: Path
    size: int
    sha256: str

    def identity(self) -> dict:
        return {"name": self.path.name, "size": self.size, "sha256": self.sha256}


def check_adapter_file(cfg, family) -> AdapterFile | None:
    """Refuse, naming the key, a training adapter that cannot work, before anything heavy loads: a missing
    file, a file that is not a LoRA, a LoRA of another family. None when the key is empty."""
    if not cfg.model.training_adapter:
        return None
    from trainer.families.registry import of_lora
    from trainer.models.safe_load import read_header

    path = Path(cfg.model.training_adapter).expanduser()
    if not path.is_file():
        raise ModelFileError(f"config key '{KEY}': {path} not found",
                             f"set {KEY} to the training adapter's .safetensors file, or to \"\" for none")
    if path.suffix.lower() != ".safetensors":
        raise ModelFileError(f"config key '{KEY}': {path.name} is not a .safetensors file",
                             "training adapters are read from .safetensors LoRA files only")
    shapes, metadata = read_header(path)
    if not any(part in key for key in shapes for part in _LORA_PARTS):
        raise ModelFileError(f"config key '{KEY}': {path.name} is not a LoRA (no lora_down/lora_A tensors among "
                             f"its {len(shapes)})", f"give the training adapter LoRA itself; {WHERE}")
    adapter_family = of_lora(list(shapes), metadata)
    if adapter_family is not None and adapter_family.id != family.id:
        raise ConfigError(f"config key '{KEY}': {path.name} is a LoRA for {adapter_family.label}, the base model "
                          f"is {family.label}", f"give a training adapter made for {family.label}")
    return AdapterFile(path, path.stat().st_size, sha256_of(path))


def distilled_warning(family, variant: str) -> str:
    """What a training adapter on a model that is not distilled means ("" when it is distilled)."""
    if variant in family.distilled_variants:
        return ""
    kind = f"{family.label} {variant}".strip()
    return (f"{KEY} is set, but {kind} is not a step-distilled model: the adapter changes what the LoRA "
            "learns against, and the LoRA is saved without it; leave the key empty unless that is meant")


class TrainingAdapter:
    """The adapter's layers on the denoiser: active for training steps, off inside `off()`."""

    def __init__(self, denoiser, file: AdapterFile):
        self.denoiser, self.file = denoiser, file

    def layers(self) -> list:
        from peft.tuners.tuners_utils import BaseTunerLayer

        return [m for m in self.denoiser.modules() if isinstance(m, BaseTunerLayer)]

    def activate(self, on: bool) -> None:
        from trainer.lora import ADAPTER

        # peft's set_adapter also marks the active adapters trainable: keep every parameter as it was
        trainable = {p: p.requires_grad for p in self.denoiser.parameters()}
        for layer in self.layers():
            layer.set_adapter([ADAPTER, NAME] if on else [ADAPTER])
        for p, flag in trainable.items():
            p.requires_grad_(flag)

    @contextlib.contextmanager
    def off(self):
        """Previews show what the user gets: their LoRA on the distilled model, without the adapter."""
        self.activate(False)
        try:
            yield
        finally:
            self.activate(True)


def apply_adapter(model, file: AdapterFile) -> TrainingAdapter:
    """Read FILE through the family's LoRA reader and put it on the denoiser as a frozen second adapter.
    Called after the trained adapter is injected, so that none of these layers is among its parameters."""
    from trainer.tryit.adapters import fit_problems
    from trainer.tryit.loras import read_lora

    tensors, metadata = read_lora(file.path)
    part = model.family.diffusers_prefix("unet")
    try:
        components = model.family.peft_components(dict(model.unet.config), file.path, tensors, metadata)
    except (KeyError, ValueError) as exc:  # names the reader does not know for this family
        raise ConfigError(f"config key '{KEY}': {file.path.name} could not be read as a {model.family.label} LoRA "
                          f"({type(exc).__name__}: {str(exc)[:200]})", f"give a training adapter for this model; "
                          f"{WHERE}") from None
    others = sorted(components.keys() - {part})
    if others:
        raise ConfigError(f"config key '{KEY}': {file.path.name} also changes {', '.join(others)}; a training "
                          "adapter applies to the denoiser only", f"give a denoiser-only training adapter; {WHERE}")
    state = components.get(part, {})
    problems = fit_problems(SimpleNamespace(**{part: model.unet}), part, state)
    if problems or not state:
        raise ConfigError(f"config key '{KEY}': {file.path.name} does not fit this {model.family.label} model: "
                          f"{'; '.join(problems[:3]) or 'it holds no denoiser weights'}",
                          "it was made for another model or size; give the adapter made for this one")
    _inject(model.unet, state, model.precision.compute)
    adapter = TrainingAdapter(model.unet, file)
    adapter.activate(True)
    return adapter


def _inject(denoiser, state: dict, dtype) -> None:
    """A LoRA of each module's own rank, scale 1 (the reader folded alpha/rank into lora_B), frozen, in the
    compute dtype (never fp8: it is small, and its delta is what matters)."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    ranks = {key.removesuffix(".lora_A.weight"): int(t.shape[0]) for key, t in state.items()
             if key.endswith(".lora_A.weight")}
    rank = Counter(ranks.values()).most_common(1)[0][0]
    odd = {f"^{re.escape(m)}$": r for m, r in ranks.items() if r != rank}
    config = LoraConfig(r=rank, lora_alpha=rank, rank_pattern=odd, alpha_pattern=dict(odd), lora_dropout=0.0,
                        target_modules="^(" + "|".join(re.escape(m) for m in ranks) + ")$")
    with warnings.catch_warnings():  # peft warns that a model with an adapter gets another: that is the point
        warnings.simplefilter("ignore")
        inject_adapter_in_model(config, denoiser, adapter_name=NAME)
    for name, p in denoiser.named_parameters():
        if f".{NAME}." in name:  # before the weights go in: peft made them in the base layer's dtype
            p.requires_grad_(False)
            p.data = p.data.to(dtype)
    result = set_peft_model_state_dict(denoiser, {k: v.to(dtype) for k, v in state.items()}, adapter_name=NAME)
    if getattr(result, "unexpected_keys", None):
        raise RuntimeError(f"training adapter weights did not load: {result.unexpected_keys[:3]}")


def check_same_file(recorded: dict | None, current: AdapterFile | None, step: int) -> None:
    """Resume: the adapter the run trained with must be the one the config names now, byte for byte."""
    now = current.identity() if current else None
    if recorded == now or (recorded and now and recorded["sha256"] == now["sha256"]):
        return
    if recorded is None:
        raise ConfigError(f"config key '{KEY}' names {now['name']}, but the run was trained to step {step} without "
                          "a training adapter", f"set {KEY} = \"\" to resume it, or start a new run")
    if now is None:
        raise ConfigError(f"config key '{KEY}' is empty, but the run was trained to step {step} with the training "
                          f"adapter {recorded['name']}", f"set {KEY} to that file again to resume")
    raise ConfigError(f"config key '{KEY}': {current.path} is not the file the run was trained with to step {step} "
                      f"({recorded['name']}, {recorded['size']} bytes, sha256 {recorded['sha256'][:12]}…; now "
                      f"{now['size']} bytes, sha256 {now['sha256'][:12]}…)",
                      "put the original adapter file back, or start a new run with the new one")
