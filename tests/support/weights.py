"""The weight updates peft's LoRA layers apply, and their comparison within the rounding the arithmetic allows.

Why tests compare these instead of images or latents: two equivalent ways to load a LoRA (another key layout,
alpha folded into the factors) give updates that differ in the last bits; several denoising steps of a random
tiny model amplify those bits by amounts that vary by CPU. The contract is about the weights, so the tests
check every module's update, and keep an image only as a coarse look.
"""

from __future__ import annotations

import torch

EPS32 = torch.finfo(torch.float32).eps


def components(model_or_pipe) -> dict[str, torch.nn.Module]:
    """The denoiser and text encoders of a loaded base model (trainer.models.load) or a diffusers pipeline."""
    encoders = getattr(model_or_pipe, "text_encoders", None) or [
        getattr(model_or_pipe, name) for name in ("text_encoder", "text_encoder_2")
        if getattr(model_or_pipe, name, None) is not None]
    return {"unet": model_or_pipe.unet, **{f"text_encoder_{i}": e for i, e in enumerate(encoders)}}


def lora_updates(models: dict[str, torch.nn.Module], adapter: str | None = None) -> dict[str, tuple]:
    """{component.module: (B·A·scaling in float64, |B|·|A|·|scaling|)} for every peft LoRA layer of the
    models that holds `adapter` (None: the layer's only adapter)."""
    out = {}
    for component, model in models.items():
        for name, module in model.named_modules():
            names = list(getattr(module, "lora_A", None) or ())
            if not names:
                continue
            key = adapter if adapter is not None else _only(names, name)
            if key not in names:
                continue
            a = module.lora_A[key].weight.detach().double().flatten(1)
            b = module.lora_B[key].weight.detach().double().flatten(1)
            scale = float(module.scaling[key])
            out[f"{component}.{name}"] = (b @ a * scale, b.abs() @ a.abs() * abs(scale))
    return out


def _only(names: list[str], module: str) -> str:
    assert len(names) == 1, f"{module} holds adapters {names}: name the one to compare"
    return names[0]


def assert_same_updates(got: dict[str, tuple], want: dict[str, tuple]) -> None:
    """Every module of both, each update within fp32 rounding of the other: a scale or a fold rounds once
    per side (at most eps/2 of the update's magnitude each); the products are summed in float64. A wrong
    alpha, a missed module or a transposed factor is off by far more."""
    assert got.keys() == want.keys() and got, (sorted(set(got) ^ set(want))[:5], len(got))
    for name, (update, magnitude) in got.items():
        other, other_magnitude = want[name]
        bound = 2 * EPS32 * (magnitude + other_magnitude)
        assert ((update - other).abs() <= bound).all(), (name, float((update - other).abs().max()))
