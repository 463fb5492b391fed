"""Write a .safetensors file one tensor at a time.

safetensors' own `save_file` takes a dict of every tensor, so writing a 6.5 GB checkpoint needs 6.5 GB of
RAM. The format is simple (8-byte header length, JSON header with dtype/shape/offsets, raw little-endian
data), so when every shape and dtype is known up front, the header is written first and each tensor is
produced, written and dropped in turn. The write is atomic like every file we write.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch

from trainer.shared.fsutil import atomic_write

DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
               torch.uint8: "U8", torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3",
               torch.float8_e5m2: "F8_E5M2"}


def stream_safetensors(path: Path, specs: dict[str, tuple[torch.dtype, tuple]],
                      tensor_for: Callable[[str], torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """`specs`: {name: (dtype, shape)} in file order; `tensor_for(name)` returns that tensor when asked."""
    header, offset = {}, 0
    for name, (dtype, shape) in specs.items():
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(len(raw).to_bytes(8, "little"))
            fh.write(raw)
            for name, (dtype, shape) in specs.items():
                tensor = tensor_for(name)
                if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                    raise ValueError(f"{name}: got {tensor.dtype} {tuple(tensor.shape)}, declared {dtype} {shape}")
                fh.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())

    atomic_write(Path(path), write)
    return Path(path)
