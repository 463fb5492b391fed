"""The LoRAs loaded into one pipeline as peft adapters: added once per file, weighted per request, evicted
when too many pile up. The base weights are never touched, so switching costs no reload."""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import torch

from trainer.shared.errors import UserError
from trainer.tryit.loras import LoraSpec, check_family, fit_prefix, read_lora

log = logging.getLogger("trainer")
MAX_CACHED = 8   # adapters kept loaded while unused (each is small next to the base)


class Adapters:
    def __init__(self, pipe, arch: str, dtype: torch.dtype = torch.float32):
        from trainer.families.registry import get

        self.pipe, self.arch, self.dtype = pipe, arch, dtype   # dtype: the layers' compute dtype (not fp8)
        self.family = get(arch)
        self.loaded: OrderedDict[tuple, str] = OrderedDict()   # (path, mtime, size) -> adapter name
        self.parts: dict[str, list[str]] = {}                   # adapter name -> components it touches
        self._counter = 0

    def activate(self, specs: list[LoraSpec]) -> None:
        """Make exactly these LoRAs active at these strengths (none: the plain base model)."""
        names = [self._ensure(spec) for spec in specs]
        if not names:
            if self.loaded:
                self.pipe.disable_lora()
            return
        self.pipe.enable_lora()
        weights = [self._weights(name, spec) for name, spec in zip(names, specs)]
        self.pipe.set_adapters(names, adapter_weights=weights)
        self._evict(keep=set(names))

    def _weights(self, name: str, spec: LoraSpec) -> dict:
        denoiser = self.family.diffusers_prefix("unet")  # the pipeline's name for it: unet, transformer
        return {part: (spec.weight if part == denoiser else spec.text_weight) for part in self.parts[name]}

    def _ensure(self, spec: LoraSpec) -> str:
        path = spec.path.resolve()
        if not path.is_file():
            raise UserError(f"LoRA not found: {path}", "give the path of a .safetensors LoRA file")
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key in self.loaded:
            self.loaded.move_to_end(key)
            return self.loaded[key]
        name = f"lora{self._counter}"
        self._counter += 1
        self._load(path, name)
        self.loaded[key] = name
        return name

    def _load(self, path: Path, name: str) -> None:
        tensors, metadata = read_lora(path)
        check_family(path, tensors, metadata, self.arch)
        denoiser = self.family.diffusers_prefix("unet")
        denoiser_config = dict(getattr(self.pipe, denoiser).config)
        components = self.family.peft_components(denoiser_config, path, tensors, metadata)
        components = {part: state if part == denoiser else fit_prefix(getattr(self.pipe, part, None), state)
                      for part, state in components.items()}
        problems = [p for part, state in components.items() for p in fit_problems(self.pipe, part, state)]
        if problems:
            raise UserError(f"{path.name} does not fit this base model: {len(problems)} tensors would be "
                            f"ignored, e.g. {'; '.join(problems[:3])}",
                            "it was trained for another model (or another size of it); pick its base model")
        flat = {f"{part}.{k}": v.to(self.dtype) for part, state in components.items() for k, v in state.items()}
        if hasattr(self.pipe, "_maybe_expand_lora_state_dict"):
            # diffusers' FLUX loader looks each LoRA'd layer's weight up by state-dict name to widen LoRAs for
            # FLUX Control models; an fp8 layer's weight is stored as `…parametrizations.weight.original`
            # (trainer.models.precision), so the lookup fails. Our files never need widening: fit_problems
            # above has checked every shape against the layer it targets.
            self.pipe._maybe_expand_lora_state_dict = lambda transformer, lora_state_dict: lora_state_dict
        self.pipe.load_lora_weights(flat, adapter_name=name)
        missing = [p for part, state in components.items() for p in not_applied(self.pipe, part, state, name)]
        if missing:
            self.pipe.delete_adapters(name)
            raise UserError(f"{path.name}: {len(missing)} modules were not applied, e.g. {missing[0]}",
                            "please report this file: its layout is not fully understood")
        self.parts[name] = sorted(components)
        log.info("LoRA %s loaded as %s (%s)", path.name, name, ", ".join(sorted(components)))

    def _evict(self, keep: set[str]) -> None:
        while len(self.loaded) > MAX_CACHED:
            for key, name in self.loaded.items():
                if name not in keep:
                    self.pipe.delete_adapters(name)
                    del self.loaded[key]
                    self.parts.pop(name, None)
                    break
            else:
                return


def _modules(state: dict) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        for part in ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector"):
            if key.endswith("." + part):
                out.setdefault(key[: -len(part) - 1], {})[part] = tensor
                break
        else:
            out.setdefault(key, {})["?"] = tensor
    return out


def fit_problems(pipe, component: str, state: dict) -> list[str]:
    """'key: reason' for every tensor that would not land on a module of the right shape."""
    model = getattr(pipe, component, None)
    if model is None:
        return [f"{component}.*: the base model has no {component}"]
    problems = []
    for module_name, parts in _modules(state).items():
        where = f"{component}.{module_name}"
        if "?" in parts:
            problems.append(f"{where}: not a LoRA tensor")
            continue
        try:
            module = model.get_submodule(module_name)
        except AttributeError:
            problems.append(f"{where}: no such module in the base model")
            continue
        base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
        problem = _shape_problem(base, parts)
        if problem:
            problems.append(f"{where}: {problem}")
    return problems


def _shape_problem(base, parts: dict) -> str:
    weight = getattr(base, "weight", None)
    if weight is None or weight.dim() not in (2, 4):
        return f"targets a {type(base).__name__}, not a Linear/Conv layer"
    down, up = parts.get("lora_A.weight"), parts.get("lora_B.weight")
    if down is None or up is None:
        return "has only one of lora_down/lora_up"
    if down.shape[1] != weight.shape[1] or up.shape[0] != weight.shape[0] or up.shape[1] != down.shape[0]:
        return f"lora_down {tuple(down.shape)} / lora_up {tuple(up.shape)} do not fit weight {tuple(weight.shape)}"
    return ""


def not_applied(pipe, component: str, state: dict, adapter: str) -> list[str]:
    """Modules of the file that got no peft layer for `adapter` (what a loader would skip quietly)."""
    model = getattr(pipe, component)
    missing = []
    for module_name in _modules(state):
        module = model.get_submodule(module_name)
        if adapter not in getattr(module, "lora_A", {}):
            missing.append(f"{component}.{module_name}")
    return missing
