"""lora.init_from: start training from an existing LoRA file (continue a downloaded or earlier LoRA).

The file goes through the importer generation uses (trainer.tryit.loras: diffusers' converter reads kohya,
LoCon and diffusers/PEFT layouts and folds each module's alpha/rank into lora_B), and every module is matched
against the adapter this config trains. A file that does not fit is refused, naming the file and what to
change: another architecture, LyCORIS/DoRA tensors, modules the config does not train or trains but the file
lacks. A rank that differs from lora.rank / lora.conv_rank is adopted from the file, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.shared import events as ev
from trainer.shared.errors import UserError

_DOWN_SUFFIXES = ("lora_down.weight", "lora_A.weight", "lora.down.weight")


@dataclass
class InitFile:
    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]


def read_init_file(cfg, sink) -> InitFile | None:
    """Read lora.init_from before the adapter is built, and adopt the file's rank(s) into cfg.lora."""
    if not cfg.lora.init_from:
        return None
    from trainer.tryit.loras import read_lora

    path = Path(cfg.lora.init_from).expanduser()
    tensors, metadata = read_lora(path)
    linear, conv = _ranks(tensors)
    if len(linear) > 1 or len(conv) > 1:
        raise UserError(f"lora.init_from: {path.name} has modules of different ranks ({sorted(linear | conv)})",
                        "start from a file with one rank (and one convolution rank), e.g. after "
                        "`lora-studio resize`, or leave lora.init_from empty")
    _adopt(cfg.lora, "rank", next(iter(linear), None), path, sink)
    if conv and cfg.lora.targets == "full":
        _adopt(cfg.lora, "conv_rank", conv.pop(), path, sink, cfg.lora.conv_rank or cfg.lora.rank)
    return InitFile(path, tensors, metadata)


def _ranks(tensors: dict[str, torch.Tensor]) -> tuple[set[int], set[int]]:
    """Ranks of the linear (and 1x1) modules, and of the 3x3 convolutions (kohya's conv_dim)."""
    linear, conv = set(), set()
    for key, tensor in tensors.items():
        if key.endswith(_DOWN_SUFFIXES):
            (conv if tensor.dim() == 4 and tensor.shape[-1] > 1 else linear).add(int(tensor.shape[0]))
    return linear, conv


def _adopt(lc, key: str, file_rank: int | None, path: Path, sink, current: int | None = None) -> None:
    current = current if current is not None else getattr(lc, key)
    if file_rank is None or file_rank == current:
        return
    setattr(lc, key, file_rank)
    sink.emit(ev.Warning(message=f"lora.init_from: {path.name} has rank {file_rank}, the config asked for "
                                 f"{current}; training at the file's rank {file_rank} (lora.{key})",
                         hint=f"set lora.{key} = {file_rank} to say so in the config"))


def load_init_weights(rt, init: InitFile | None) -> None:
    """Put the file's weights into the freshly built adapter (after setup_runtime, before training)."""
    if init is None:
        return
    from trainer.lora.algorithms import module_scales
    from trainer.lora.inject import adapter_state_dict, load_adapter_state_dict
    from trainer.tryit.loras import check_family, fit_prefix, to_peft_components

    model = rt.model
    check_family(init.path, init.tensors, init.metadata, model.arch)  # architecture; LyCORIS parts
    found = to_peft_components(model.family.diffusers_pipeline(), model.unet.config, init.path, init.tensors)
    modules = {"unet": model.unet} | dict(zip(model.family.text_encoders,
                                              model.text_encoders if rt.te_params else []))
    for component in found.keys() - modules.keys():
        raise UserError(f"lora.init_from: {init.path.name} trains the text encoder ({component}); this config "
                        "does not", "set lora.train_text_encoder = true, or start from a UNet-only LoRA")
    for component, module in modules.items():
        state = fit_prefix(module, found.get(component, {})) if component != "unet" else found.get(component, {})
        ours = adapter_state_dict(module)
        _check_fit(init.path, component, state, ours)
        scales = module_scales(module)
        for key, tensor in state.items():  # the file's scale is folded into lora_B; ours multiplies it again
            scale = scales[key.rsplit(".", 2)[0]][1] if key.endswith("lora_B.weight") else 1.0
            state[key] = (tensor.float() / scale).to(ours[key].dtype)
        load_adapter_state_dict(module, state)


def _check_fit(path: Path, component: str, state: dict, ours: dict) -> None:
    extra = sorted(state.keys() - ours.keys())
    missing = sorted(k for k in ours.keys() - state.keys() if k.endswith(("lora_A.weight", "lora_B.weight")))
    if extra:
        raise UserError(f"lora.init_from: {path.name} has {len(extra)} {component} weights this config does not "
                        f"train, e.g. {extra[0]}", "set lora.targets to the layers the file was trained on "
                        "(\"full\" for LoCon files with convolutions, \"attention+ff\" for kohya's default set)")
    if missing:
        raise UserError(f"lora.init_from: {path.name} has no weights for {len(missing)} {component} modules this "
                        f"config trains, e.g. {missing[0]}", "set lora.targets (and lora.train_text_encoder) to "
                        "what the file was trained with")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(ours[key].shape):
            raise UserError(f"lora.init_from: {path.name}: {key} is {tuple(tensor.shape)}, the base model's "
                            f"layer needs {tuple(ours[key].shape)}", "the file was made for another base model")
