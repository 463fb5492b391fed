"""Refuse to load a captioning model that cannot fit: a clear message beats an OOM kill half-way through
a dataset (or the whole desktop swapping). The estimate is the size of the weight files times a margin."""

from __future__ import annotations

from pathlib import Path

from trainer.data.captioning.base import CaptionerError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt", ".pth", ".data")  # .data: ONNX external weights
MEMORY_FACTOR = 1.5  # weights plus activations and the runtime's own buffers, roughly


def weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def check_memory(folder: Path, device: str, bytes_per_weight_byte: float = 1.0) -> None:
    """`bytes_per_weight_byte`: 0.5 when fp32 files are loaded in fp16 on a GPU."""
    need = weights_bytes(folder) * bytes_per_weight_byte * MEMORY_FACTOR
    free, where = free_bytes(device)
    if free is not None and need > free:
        raise CaptionerError(
            f"the captioning model in {folder} needs about {_size(need)} and only {_size(free)} of {where} "
            "memory is free",
            "close other programs (or stop training), use --device cpu, or pick a smaller model")


def free_bytes(device: str) -> tuple[int | None, str]:
    """Free memory where the model will live; None when it cannot be told (then the load just tries)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():  # onnxruntime-gpu beside a CPU build of torch: no reading
            return None, "GPU"
        index = torch.device(device).index
        free, _total = torch.cuda.mem_get_info(index if index is not None else torch.cuda.current_device())
        return free, "GPU"
    try:
        import psutil  # accelerate depends on it, so it is always installed with the engine
    except ImportError:
        return None, "system"
    return psutil.virtual_memory().available, "system"


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"
