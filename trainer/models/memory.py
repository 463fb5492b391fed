"""How much RAM a base model needs in each weight dtype, read from the file's header alone, and the check
that refuses to start loading a model that cannot fit (swapping for minutes, then being killed, is worse)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from trainer.shared.errors import ModelFileError

GB = 1024**3
PROCESS_BASE = 0.7 * GB  # Python + torch + diffusers + transformers imported (measured, bench/memory.py)
VAE_PREFIXES = ("first_stage_model.", "vae.")
SKIP_PREFIXES = ("model_ema.",)  # EMA copies some checkpoints carry: never loaded
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def tensor_shapes(path: Path) -> dict[str, tuple]:
    """{key: shape} of every weights file of a single file or a diffusers folder (keys prefixed by folder)."""
    from trainer.models.safe_load import read_header
    from trainer.models.streaming import TensorFile

    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".safetensors":
        return read_header(path)[0]
    if path.is_file():
        source = TensorFile.open(path)
        return {k: source.shape(k) for k in source.keys()}
    from trainer.models.folder import weights_file

    shapes = {}
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if (path / sub).is_dir():
            source = TensorFile.open(weights_file(path / sub))
            shapes.update({f"{sub}.{k}": source.shape(k) for k in source.keys()})
    return shapes


def weights_bytes(shapes: dict[str, tuple], weight_dtype: str, compute_bytes: int = 2) -> int:
    """Bytes of the frozen weights once loaded as `weight_dtype` (fp8: linear/conv weights at 1 byte, the
    rest at `compute_bytes`; the VAE at 2 bytes with bf16, else 4)."""
    total = 0
    for key, shape in shapes.items():
        if key.startswith(SKIP_PREFIXES) or not shape:
            continue
        numel = math.prod(shape)
        if key.startswith(VAE_PREFIXES):
            total += numel * (2 if weight_dtype == "bf16" or (weight_dtype == "fp8" and compute_bytes == 2) else 4)
        elif weight_dtype == "fp8":
            total += numel * (1 if len(shape) >= 2 and "embed" not in key else compute_bytes)
        else:
            total += numel * BYTES[weight_dtype]
    return total


def available_ram() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def check_ram(path: Path, info, precision) -> None:
    """Refuse, before reading a byte of weights, a model that would not fit in the RAM free right now."""
    if os.environ.get("LORA_STUDIO_SKIP_RAM_CHECK"):
        return
    shapes = tensor_shapes(path)
    compute = precision.compute.itemsize
    need = weights_bytes(shapes, precision.name, compute) + PROCESS_BASE
    free = available_ram()
    if need <= free:
        return
    fits = [name for name in ("bf16", "fp8") if weights_bytes(shapes, name, 2) + PROCESS_BASE <= free]
    hint = (f"set performance.weight_dtype = \"{fits[0]}\" (≈ {_gb(weights_bytes(shapes, fits[0], 2))} GB)"
            if fits else "close other programs, or train on a computer with more RAM")
    raise ModelFileError(f"{path} needs ≈ {_gb(need)} GB of RAM with weight_dtype {precision.name}, but only "
                         f"{_gb(free)} GB is free", hint + "; LORA_STUDIO_SKIP_RAM_CHECK=1 skips this check "
                         "(with enough swap it loads, slowly)")


def _gb(n: int) -> str:
    return f"{n / GB:.1f}"
