"""`lora-studio merge --loras A:W B:W --out C`: several LoRAs into one kohya-layout LoRA.

Exact by default: each module's update is sum_i w_i * (alpha_i / r_i) * up_i @ down_i, which is one LoRA
whose down factors are stacked and whose up factors are stacked side by side, scaled (ranks add up; the
alpha becomes the new rank, i.e. scale 1). With --rank N the result is truncated by SVD with the resize
code (`trainer.export.convert.resize_rank`), and the retained energy is reported.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer.export.convert import group_modules, resize_rank, scale_of
from trainer.export.save import write_safetensors
from trainer.shared.errors import UserError
from trainer.tryit.loras import LoraSpec, lora_family, read_lora


def combine_tensors(inputs: list[tuple[dict[str, torch.Tensor], LoraSpec]]) -> dict[str, torch.Tensor]:
    stacks: dict[str, tuple[list, list]] = {}
    for tensors, spec in inputs:
        for name, parts in group_modules(tensors).items():
            if "dora_scale" in parts:
                raise UserError(f"{spec.path.name}: {name} is a DoRA module; DoRA LoRAs cannot be combined exactly",
                                "use each DoRA LoRA on its own, or bake it into a checkpoint")
            weight = spec.text_weight if name.startswith("lora_te") else spec.weight
            downs, ups = stacks.setdefault(name, ([], []))
            downs.append(parts["lora_down.weight"].float())
            ups.append(parts["lora_up.weight"].float() * (weight * scale_of(parts)))
    dtype = next(iter(inputs[0][0].values())).dtype
    out = {}
    for name, (downs, ups) in stacks.items():
        if len({d.shape[1:] for d in downs}) > 1:
            raise UserError(f"{name}: the LoRAs use different kernel shapes {[tuple(d.shape) for d in downs]}",
                            "combine them with --rank N instead (the SVD handles any shapes)")
        down, up = torch.cat(downs, 0), torch.cat(ups, 1)
        out[f"{name}.lora_down.weight"] = down.to(dtype).contiguous()
        out[f"{name}.lora_up.weight"] = up.to(dtype).contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(down.shape[0]), dtype=dtype)
    return out


def combine_files(specs: list[LoraSpec], out: Path, rank: int | None = None, overwrite: bool = False) -> dict:
    if len(specs) < 2:
        raise UserError("combining needs at least two LoRAs", "merge --loras A.safetensors:0.7 B.safetensors:0.5")
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists", "choose another --out, or pass --overwrite")
    inputs = [(*read_lora(spec.path), spec) for spec in specs]
    _check_inputs(inputs)
    tensors = combine_tensors([(t, spec) for t, _, spec in inputs])
    energy: dict[str, float] = {}
    if rank is not None:
        if rank < 1:
            raise UserError(f"--rank {rank} must be at least 1", "e.g. --rank 32")
        tensors, energy = resize_rank(tensors, rank)
    write_safetensors(out, tensors, _metadata(inputs, tensors, out))
    ranks = sorted({t.shape[0] for k, t in tensors.items() if k.endswith(("lora_down.weight", "lora_A.weight"))})
    result = {"out": str(out), "modules": len(group_modules(tensors)), "rank": ranks[-1]}
    summary = f"combined {len(specs)} LoRAs into {out} ({result['modules']} modules, rank up to {ranks[-1]})"
    if energy:
        result.update(mean_energy=sum(energy.values()) / len(energy), min_energy=min(energy.values()))
        summary += (f"\n  retained energy at rank {rank}: mean {result['mean_energy']:.1%}, "
                    f"worst module {result['min_energy']:.1%}")
    result["summary"] = summary
    return result


def _check_inputs(inputs: list) -> None:
    families = []  # one entry per file, never keyed by name: two files may share one
    for tensors, metadata, spec in inputs:
        if not any(k.endswith(("lora_down.weight", "lora_A.weight")) for k in tensors):
            raise UserError(f"{spec.path.name} is not in the kohya layout (no lora_down/lora_up tensors)",
                            "combine kohya-layout LoRAs (what LoRA Studio, kohya_ss and civitai use)")
        families.append((spec.path, lora_family(tensors, metadata)))
    if len({f.id for _, f in families if f}) > 1:
        listed = ", ".join(f"{path}: {f.label}" for path, f in families if f)
        raise UserError(f"these LoRAs are for different models ({listed})", "combine LoRAs of one model family")


def _metadata(inputs: list, tensors: dict, out: Path) -> dict:
    meta = dict(inputs[0][1])
    rank = max(t.shape[0] for k, t in tensors.items() if k.endswith(("lora_down.weight", "lora_A.weight")))
    meta.update(ss_network_dim=str(rank), ss_network_alpha=repr(float(rank)), ss_output_name=out.stem)
    meta["modelspec.title"] = out.stem
    meta["lora_studio_combined_from"] = json.dumps(
        [{"file": spec.path.name, "weight": spec.weight, "te_weight": spec.text_weight} for _, _, spec in inputs])
    meta.pop("modelspec.thumbnail", None)
    return meta
