"""What every captioner offers, its options, and the memory check both back ends run before loading."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import UserError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt", ".pth")
MEMORY_FACTOR = 1.5  # weights plus activations and the runtime's own buffers, roughly


class CaptionerError(UserError):
    """The folder holds no usable model, its files disagree, or it would not fit in memory."""


@dataclass
class TaggerOptions:
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    exclude: list[str] = field(default_factory=list)
    underscores_to_spaces: bool = True


class Captioner:
    name = "captioner"

    def caption(self, image) -> str:  # a PIL image in RGB
        raise NotImplementedError


def weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.suffix in WEIGHT_SUFFIXES)


def check_memory(folder: Path, device: str) -> None:
    """Refuse before loading a model that cannot fit: a clear message beats an OOM kill mid-way."""
    need = weights_bytes(folder) * MEMORY_FACTOR
    free, where = _free_bytes(device)
    if free is not None and need > free:
        raise CaptionerError(
            f"the captioning model in {folder} needs about {_size(need)} and only {_size(free)} of {where} "
            "memory is free",
            "close other programs (or stop training), use the CPU, or pick a smaller model")


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def _free_bytes(device: str) -> tuple[int | None, str]:
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info()
        return free, "GPU"
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "system"
    except OSError:
        pass
    return None, "system"  # unknown (not Linux): let the load try


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
