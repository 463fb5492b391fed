"""LoRA files built at test time: ours (kohya layout with our metadata), foreign kohya files (no metadata of
ours, LoCon convolutions), diffusers/PEFT files — all with random weights large enough to change an image."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from trainer.export.verify import module_table

ATTENTION = ("attn1_to_q", "attn1_to_k", "attn1_to_v", "attn1_to_out_0", "attn2_to_q", "attn2_to_k",
             "attn2_to_v", "attn2_to_out_0")
TE_PARTS = ("self_attn_q_proj", "self_attn_v_proj", "mlp_fc1")
CONV = ("resnets_0_conv1",)


def kohya_tensors(config: str = "tiny-sd15", arch: str = "sd1", rank: int = 4, seed: int = 0, scale: float = 0.5,
                  te: bool = True, conv: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, target in module_table(config, arch).items():
        wanted = name.endswith(ATTENTION) or (te and name.startswith("lora_te") and name.endswith(TE_PARTS)) \
            or (conv and target.kind == "Conv2d" and name.endswith(CONV))
        if not wanted:
            continue
        out_f, in_f = target.shape[0], target.shape[1]
        kernel = tuple(target.shape[2:])
        out[f"{name}.lora_down.weight"] = torch.randn((rank, in_f, *kernel), generator=gen) * scale
        out[f"{name}.lora_up.weight"] = torch.randn((out_f, rank, *([1] * len(kernel))), generator=gen) * scale
        out[f"{name}.alpha"] = torch.tensor(float(rank))
    return out


def write_lora(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata or {})
    return path


def our_lora(path: Path, config: str = "tiny-sd15", arch: str = "sd1", seed: int = 0, **kwargs) -> Path:
    meta = {"lora_studio_base_config": config, "ss_network_dim": "4", "ss_network_alpha": "4.0",
            "ss_output_name": path.stem,
            "ss_base_model_version": "sdxl_base_v1-0" if arch == "sdxl" else "sd_v1"}
    tensors = {k: v.half() for k, v in kohya_tensors(config, arch, seed=seed, **kwargs).items()}
    return write_lora(path, tensors, meta)
