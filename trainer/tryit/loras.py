"""LoRA files for generation: ours, kohya/LyCORIS files from civitai, diffusers/PEFT files.

diffusers' own converter (`lora_state_dict`) turns every known layout into diffusers module names (kohya's
SGM names for SDXL included); peft injects the layers (through diffusers' `load_lora_weights`) and weights
them (`set_adapters`), so switching LoRAs or strengths never touches the base weights. Before anything is
injected, every tensor is checked against the module it targets: a file that would apply only partly is
refused with the keys and the reason, never silently half-applied.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.shared.errors import UserError
from trainer.shared.generate_params import lora_problem

UNSUPPORTED_PARTS = {"hada_": "LoHa", "lokr_": "LoKr", ".diff": "full-weight diff", "oft_": "OFT",
                     "boft_": "BOFT", "ia3_": "IA3"}
# diffusers' kohya converter writes text-encoder attention in its older `to_q_lora.down` layout and the MLP
# in `lora_linear_layer.down`: a mix that its `convert_state_dict_to_peft` cannot infer (diffusers 0.42), and
# transformers 5 dropped the `text_model.` wrapper of CLIPTextModel (not of CLIPTextModelWithProjection). So the
# text-encoder names are mapped to PEFT here, and `text_model.` is fitted to the model at hand (`fit_prefix`).
_TE_SUFFIXES = [(re.compile(r"\.to_(q|k|v)_lora\.(down|up)\.weight$"), lambda m: f".{m[1]}_proj.{_ab(m[2])}"),
                (re.compile(r"\.to_out_lora\.(down|up)\.weight$"), lambda m: f".out_proj.{_ab(m[1])}"),
                (re.compile(r"\.(?:lora_linear_layer|lora)\.(down|up)\.weight$"), lambda m: f".{_ab(m[1])}")]


def _ab(direction: str) -> str:
    return "lora_A.weight" if direction == "down" else "lora_B.weight"


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA as the user asked for it: FILE[:WEIGHT[:TE_WEIGHT]]."""

    path: Path
    weight: float = 1.0
    te_weight: float | None = None   # None: same as weight (A1111's default)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def text_weight(self) -> float:
        return self.weight if self.te_weight is None else self.te_weight

    def to_dict(self) -> dict:
        return {"path": str(self.path), "weight": self.weight, "te_weight": self.te_weight}


def parse_lora_arg(text: str) -> LoraSpec:
    """`FILE`, `FILE:0.8` or `FILE:0.8:0.5` (a Windows drive letter's colon is part of FILE)."""
    parts = text.split(":")
    numbers: list[float] = []
    while len(parts) > 1 and len(numbers) < 2 and _is_number(parts[-1]):
        numbers.insert(0, float(parts.pop()))
    if not all(math.isfinite(n) for n in numbers):  # a NaN strength bakes or draws nothing but NaN
        raise UserError(f"LoRA weight in {text!r} is not a finite number", "for example FILE.safetensors:0.8")
    path = Path(":".join(parts)).expanduser()
    return LoraSpec(path, *(numbers or [1.0]))


def lora_from_dict(item: dict) -> LoraSpec:
    """A LoRA in a `serve` request: {"path": ..., "weight": 0.8, "te_weight": 0.5}."""
    try:
        lora_problem(item)
    except ValueError as exc:
        raise UserError(str(exc), 'give {"path": FILE, "weight": 1.0}') from None
    te = item.get("te_weight")
    return LoraSpec(Path(item["path"]).expanduser(), float(item.get("weight", 1.0)),
                    None if te is None else float(te))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def file_hash(path: Path) -> str:
    """A1111's short hash of a LoRA (sha256 of the file, 12 hex digits), shown in its `Lora hashes`."""
    from trainer.shared.fsutil import sha256_of

    return sha256_of(path)[:12]


def read_lora(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from trainer.models.safe_load import read_lora_file

    if not path.is_file():
        raise UserError(f"LoRA not found: {path}", "give the path of a .safetensors LoRA file")
    if path.suffix.lower() != ".safetensors":
        raise UserError(f"{path} is not a .safetensors file", "LoRAs are read from .safetensors files only")
    return read_lora_file(path)  # header checked first (truncated or mislabelled files), every value finite


def lora_family(tensors: dict, metadata: dict):
    """The family (trainer.families) a LoRA file says it is for, or None when it does not say."""
    from trainer.families.registry import of_lora

    return of_lora(list(tensors), metadata)


def check_family(path: Path, tensors: dict, metadata: dict, base_arch: str) -> None:
    from trainer.families.registry import get

    family, base = lora_family(tensors, metadata), get(base_arch)
    if family is not None and family.id != base.id:
        raise UserError(f"{path.name} is a LoRA for {family.label}, the base model is {base.label}",
                        f"choose a {family.label} base model, or a LoRA trained for {base.label}")
    for key in tensors:
        for marker, kind in UNSUPPORTED_PARTS.items():
            if marker in key:
                count = sum(marker in k for k in tensors)
                raise UserError(f"{path.name} is a LyCORIS {kind} file ({count} tensors such as {key}); "
                                f"generation applies LoRA/LoCon/DoRA modules only",
                                "use it in A1111/ComfyUI, or train a LoRA (lora.algorithm = lora)")


def to_peft_components(pipeline_cls, unet_config, path: Path, tensors: dict) -> dict[str, dict[str, torch.Tensor]]:
    """{component: PEFT-layout state dict with alpha folded into lora_B} through diffusers' converter
    (`pipeline_cls.lora_state_dict`; the UNet config tells it how SGM block names map for SDXL files)."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    try:
        state, alphas = pipeline_cls.lora_state_dict(dict(tensors), unet_config=unet_config)
    except (ValueError, KeyError) as exc:
        raise UserError(f"{path.name} could not be read as a LoRA: {str(exc)[:400]}",
                        "its keys are in no layout diffusers knows (kohya, LyCORIS LoCon, diffusers/PEFT)") from None
    state = _fold_alphas(dict(state), alphas or {})
    out: dict[str, dict[str, torch.Tensor]] = {}
    for component in ("unet", "text_encoder", "text_encoder_2"):
        part = {k[len(component) + 1:]: v for k, v in state.items() if k.startswith(component + ".")}
        if part:
            out[component] = convert_unet_state_dict_to_peft(part) if component == "unet" else _te_to_peft(part)
    leftover = [k for k in state if k.split(".", 1)[0] not in out]
    if leftover:
        raise UserError(f"{path.name}: {len(leftover)} tensors target no part of the model, e.g. {leftover[0]}",
                        "the file is not a Stable Diffusion LoRA, or for another model family")
    return out


# diffusers' converter names an alpha after the down tensor (`…to_q_lora.down.weight.alpha`, attention and
# text encoders) or after the module alone (`…resnets.0.conv1.alpha`, LoCon layers: `…conv1.lora.down.weight`)
_DOWN_SUFFIXES = ("", ".lora.down.weight", ".lora_A.weight", ".lora_linear_layer.down.weight")


def _fold_alphas(state: dict, alphas: dict) -> dict:
    # Fold kohya's alpha/rank scale into lora_B: the adapter then means the same at peft's scale 1.
    for alpha_key, alpha in alphas.items():
        base = alpha_key.removesuffix(".alpha")
        down = next((base + suffix for suffix in _DOWN_SUFFIXES if base + suffix in state), None)
        if down is None:
            raise UserError(f"the alpha {alpha_key} belongs to no LoRA tensor of the file",
                            "the file's layout is not fully understood: please report it")
        up = down.replace("lora_A.weight", "lora_B.weight") if "lora_A" in down else \
            down.removesuffix("down.weight") + "up.weight"
        state[up] = state[up].float() * (float(alpha) / state[down].shape[0])
    return state


def fit_prefix(model, state: dict) -> dict:
    """Add or drop `text_model.` so that the keys name modules of this text encoder."""
    wrapped = hasattr(model, "text_model")
    out = {}
    for key, tensor in state.items():
        bare = key.removeprefix("text_model.")
        out["text_model." + bare if wrapped else bare] = tensor
    return out


def _te_to_peft(part: dict) -> dict:
    out = {}
    for key, tensor in part.items():
        new = key
        for pattern, repl in _TE_SUFFIXES:
            new = pattern.sub(repl, new)
        out[new] = tensor
    return out
