"""Real-size random-weight checkpoints for the memory and GPU benchmarks (never for tests or CI).

Built from the shipped configs (assets/configs/sd15, sdxl) in the exact A1111/civitai single-file layout and
size, fp16 on disk (SD1.5 2.0 GB, SDXL 6.5 GB), without ever holding the model in memory: the components are
built on the meta device, their original-layout names and shapes come from trainer/families/ldm_layout.py,
and each tensor is drawn and written in turn. Random weights give noise images, but load and train exactly
like a real checkpoint of that size.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "assets" / "configs"
ARCHS = {"sd15": "sd15", "sdxl": "sdxl"}


def meta_components(arch: str) -> dict:
    """The components of config folder `arch` (sd15, sdxl) built on the meta device by their family."""
    from trainer.families.registry import find

    family = find(arch)
    return family.meta_components(family.config_folder(arch))


def build_checkpoint(arch: str, path: Path, seed: int = 0) -> Path:
    """Write a random-weight single file for `arch` (sd15 | sdxl) to `path` unless it is there already."""
    from trainer.families.ldm_layout import to_original_state_dict
    from trainer.models.safetensors_stream import stream_safetensors

    path = Path(path)
    if path.exists():
        return path
    shapes = {k: tuple(v.shape) for k, v in to_original_state_dict(meta_components(arch), arch).items()}
    generator = torch.Generator().manual_seed(seed)
    specs = {k: (torch.float16, shape) for k, shape in sorted(shapes.items())}
    from trainer.families.registry import find

    architecture = find(arch).metadata("epsilon")["modelspec.architecture"]
    metadata = {"modelspec.architecture": architecture, "modelspec.title": f"random {arch} (LoRA Studio benchmark)"}
    return stream_safetensors(path, specs, lambda key: _random(key, shapes[key], generator), metadata)


def _random(key: str, shape: tuple, generator: torch.Generator) -> torch.Tensor:
    if key.endswith("bias"):
        return torch.zeros(shape, dtype=torch.float16)
    if len(shape) == 1:  # norm scales
        return torch.ones(shape, dtype=torch.float16)
    return (torch.randn(shape, generator=generator) * 0.02).to(torch.float16)


def frozen_parameter_count(arch: str) -> dict[str, int]:
    return {name: sum(p.numel() for p in module.parameters()) for name, module in meta_components(arch).items()}


def _json(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arch", choices=sorted(ARCHS))
    p.add_argument("path", type=Path)
    args = p.parse_args()
    print(build_checkpoint(args.arch, args.path))
