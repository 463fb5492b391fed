"""`lora-studio merge BASE LORA[:W]... --out FILE`: bake LoRAs into a single-file checkpoint.

The output uses the ORIGINAL key layout (`model.diffusion_model.*`, `cond_stage_model.*` /
`conditioner.embedders.*`, `first_stage_model.*`), which A1111, ComfyUI and diffusers' `from_single_file`
load. A single-file base is streamed: each tensor is read alone (trainer.models.streaming.TensorFile, plain
reads), gets its LoRA updates, is cast and written (trainer.models.safetensors_stream), so peak memory is
one tensor plus the LoRA factors, whatever the model's size. A diffusers folder or demo: base is loaded and
converted to the original layout first (trainer.families.ldm_layout), which needs the whole model in RAM.

The LoRAs go through the same converter as generation (`to_peft_components`), so the baked model is the
base + LoRA that `generate` shows; each module's update up @ down is computed only when its tensor is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer.export.save import SAVE_DTYPES
from trainer.shared.errors import UserError
from trainer.tryit.loras import LoraSpec, check_family, file_hash, read_lora

PROGRESS_EVERY = 25   # tensors between progress reports
class _DictSource:
    """An in-memory original-layout state dict with TensorFile's reading interface."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state = state

    def keys(self) -> list[str]:
        return list(self.state)

    def dtype(self, key: str) -> torch.dtype:
        return self.state[key].dtype

    def shape(self, key: str) -> tuple:
        return tuple(self.state[key].shape)

    def read(self, key: str) -> torch.Tensor:
        return self.state[key]


def open_base(base: str, weight_dtype: str = "auto"):
    """(tensor source in the original layout, family id, unet config, metadata)."""

    path = Path(base).expanduser()
    if path.is_file():
        from trainer.models.detect import inspect_base_model
        from trainer.models.safe_load import read_header
        from trainer.models.streaming import TensorFile

        info = inspect_base_model(path)
        metadata = read_header(path)[1] if path.suffix.lower() == ".safetensors" else {}
        return TensorFile.open(path), info.arch, info.family.denoiser_config(info.config_name()), metadata
    from trainer.tryit.engine import load_base

    model = load_base(base, weight_dtype, torch.device("cpu"))
    components = {"unet": model.unet, "vae": model.vae, **dict(zip(model.family.text_encoders, model.text_encoders))}
    return _DictSource(model.family.original_layout(components)), model.arch, dict(model.unet.config), {}


def plan_updates(source, arch: str, unet_config: dict, specs: list[LoraSpec]) -> dict[str, list]:
    """{original key: [(rows, up, down, strength)]}, every LoRA module checked against the base; rows as
    Family.original_key says (None: the whole weight)."""
    from trainer.families.registry import get

    family = get(arch)
    keys, updates, problems = set(source.keys()), {}, []
    for spec in specs:
        tensors, metadata = read_lora(spec.path)
        check_family(spec.path, tensors, metadata, arch)
        for component, state in family.peft_components(unet_config, spec.path, tensors, metadata).items():
            component = "unet" if component == family.diffusers_prefix("unet") else component
            strength = spec.weight if component == "unet" else spec.text_weight
            for key in state:
                if key.endswith("lora_magnitude_vector"):
                    raise UserError(f"{spec.path.name} is a DoRA LoRA; baking supports plain LoRA/LoCon",
                                    "use it as a LoRA at generation time instead")
                if not key.endswith(".lora_A.weight"):
                    continue
                module = key.removesuffix(".lora_A.weight")
                target, third = family.original_key(component, module, unet_config)
                if target not in keys and "model.diffusion_model." + target in keys:  # a full checkpoint
                    target = "model.diffusion_model." + target
                if target not in keys:
                    problems.append(f"{component}.{module} -> {target}")
                    continue
                updates.setdefault(target, []).append(
                    (third, state[f"{module}.lora_B.weight"].float(), state[key].float(), strength))
    if problems:
        raise UserError(f"{len(problems)} LoRA modules have no weight in the base checkpoint, e.g. {problems[0]}",
                        "the LoRA and the checkpoint are for different models")
    return updates


def updated(tensor: torch.Tensor, changes: list) -> torch.Tensor:
    weight = tensor.float()
    for third, up, down, strength in changes:
        delta = (up.flatten(1) @ down.flatten(1)) * strength
        if third is None:
            weight += delta.reshape(weight.shape)
        else:  # rows of a fused weight: OpenCLIP's q/k/v thirds, FLUX's (first, end) row ranges
            rows = weight.shape[0] // 3
            first, end = third if isinstance(third, tuple) else (third * rows, (third + 1) * rows)
            weight[first:end] += delta.reshape(end - first, *weight.shape[1:])
    return weight


def bake_checkpoint(base: str, specs: list[LoraSpec], out: Path, dtype: str = "fp16", overwrite: bool = False,
                    on_progress=lambda done, total: None, weight_dtype: str = "auto") -> dict:
    from trainer.models.safetensors_stream import stream_safetensors

    out = Path(out).expanduser()
    if out.suffix.lower() != ".safetensors":
        raise UserError(f"{out} must end in .safetensors", "merged checkpoints are written as safetensors")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists", "choose another --out, or pass --overwrite")
    if not specs:
        raise UserError("no LoRA to merge", "merge BASE.safetensors LORA.safetensors:0.8 --out MERGED.safetensors")
    source, arch, unet_config, metadata = open_base(str(base), weight_dtype)
    updates = plan_updates(source, arch, unet_config, specs)
    out_dtype = SAVE_DTYPES[dtype]
    keys = source.keys()
    layout = {k: (out_dtype if source.dtype(k).is_floating_point else source.dtype(k), source.shape(k))
              for k in keys}
    done = [0]

    def tensor_for(key: str) -> torch.Tensor:
        tensor = source.read(key)
        if key in updates:
            tensor = updated(tensor, updates[key])
        done[0] += 1
        if done[0] % PROGRESS_EVERY == 0 or done[0] == len(keys):
            on_progress(done[0], len(keys))
        return tensor.to(layout[key][0])

    merged = [{"file": s.path.name, "sha256": file_hash(s.path), "weight": s.weight, "te_weight": s.text_weight}
              for s in specs]
    meta = dict(metadata, lora_studio_merged=json.dumps(merged), **{"modelspec.title": out.stem})
    stream_safetensors(out, layout, tensor_for, meta)
    names = ", ".join(f"{s.path.stem}:{s.weight:g}" for s in specs)
    return {"out": str(out), "tensors": len(keys), "changed": len(updates), "dtype": dtype,
            "summary": f"merged {names} into {out} ({len(updates)} of {len(keys)} tensors changed, {dtype})"}
