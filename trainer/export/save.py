"""Writing adapter files: kohya layout with metadata, atomically, and never with NaN weights."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save

from trainer.shared.errors import UserError
from trainer.shared.fsutil import atomic_write_bytes

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class NonFiniteWeights(UserError):
    pass


def check_finite(tensors: dict[str, torch.Tensor]) -> None:
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteWeights(f"adapter weights contain NaN/inf ({len(bad)} tensors, e.g. {bad[0]})",
                               "not saved; lower the learning rate or use bf16 instead of fp16")


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    check_finite(tensors)
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(Path(path), data)
    return Path(path)
