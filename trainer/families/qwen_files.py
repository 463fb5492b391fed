"""The files Z-Image and FLUX.2 klein share the handling of: Qwen3 text encoders (`qwen_3_4b.safetensors`,
`qwen_3_8b.safetensors`, transformers' `model.layers.N…` names) read a layer at a time and only as deep as the
family's recipe reads, their size checked against what the transformer reads before anything loads; the
flow-matching scheduler.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from trainer.shared.errors import ModelFileError

QWEN_PREFIX = "model."


def json_file(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def build_scheduler(configs: Path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(json_file(configs / "scheduler" / "scheduler_config.json"))


def load_qwen(configs: Path, file: Path, precision, build):
    """Only the embedding and the decoder layers the recipe reads: the rest of the file is never read."""
    from trainer.models.streaming import TensorFile, load_component

    source = TensorFile.open(file)
    keep = _qwen_layers(configs, build)
    keys = [k for k in source.keys() if _wanted(k.removeprefix(QWEN_PREFIX), keep)]
    return load_component(lambda: build(configs, "text_encoder"), source, keys,
                          lambda state: {k.removeprefix(QWEN_PREFIX): v for k, v in state.items()},
                          precision.dtype_for, f"Qwen3 text encoder ({file.name})")


def _qwen_layers(configs: Path, build) -> int:
    from accelerate import init_empty_weights

    with init_empty_weights():
        return len(build(configs, "text_encoder").layers)


def _wanted(key: str, keep: int) -> bool:
    m = re.match(r"layers\.(\d+)\.", key)
    return key.startswith("embed_tokens.") or bool(m and int(m[1]) < keep)


QWEN_FILES = {"qwen3-4b": ("Qwen3-4B", "qwen_3_4b.safetensors"), "qwen3-8b": ("Qwen3-8B", "qwen_3_8b.safetensors")}


def check_text_encoder(file: Path, expected: str, label: str) -> None:
    """Refuse, before it loads, a text encoder of the wrong size (Qwen3-8B for a 4B model) or kind. The tiny
    test models' Qwen3 (hidden width under 256) passes for either."""
    from trainer.models import dit_detect
    from trainer.models.safe_load import read_header

    shapes, _ = read_header(file)
    kind = dit_detect.identify(shapes)
    want, name = QWEN_FILES[expected]
    hint = f"set model.text_encoder to {name} (ComfyUI keeps it in models/text_encoders)"
    if kind is None or kind.family != "qwen3":
        raise ModelFileError(f"{file} is not a Qwen3 text encoder ({kind.label if kind else 'unknown file'}); "
                             f"{label} reads {want}", hint)
    width = next(s for k, s in shapes.items() if k.endswith("embed_tokens.weight"))[1]
    if kind.variant != expected and width >= 256:
        raise ModelFileError(f"{file} is {kind.label}, but {label} reads {want}", hint)


def load_folder(path: Path, precision, device, build, label: str, vae_hook=None) -> dict:
    """A diffusers folder of a Qwen3 family (model_index.json, transformer/, vae/, text_encoder/, scheduler/;
    sharded or not): its own configs, diffusers' names, so nothing is converted. Read as the single files are:
    Qwen3 only as deep as the recipe reads, the transformer deferred until the captions are encoded. The
    shipped Qwen3 tokenizer is the models' own (assets/PROVENANCE), so the folder's is not needed."""
    from trainer.models.assets import load_qwen3_tokenizer
    from trainer.models.folder import weights_file
    from trainer.models.streaming import TensorFile, load_component

    def part(name: str, folder: str, dtype_for):
        source = TensorFile.open(weights_file(path / folder))
        return load_component(lambda: build(path, name), source, source.keys(), None, dtype_for,
                              f"{label} {folder} ({path.name})").to(device)

    vae = part("vae", "vae", precision.vae_dtype_for)
    return {"vae": vae_hook(vae) if vae_hook else vae,
            "text_encoder": load_qwen(path, weights_file(path / "text_encoder"), precision, build).to(device),
            "scheduler": build_scheduler(path), "tokenizer": load_qwen3_tokenizer(),
            "unet": lambda: part("unet", "transformer", precision.dtype_for)}
