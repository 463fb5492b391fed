"""`lora-studio plan CFG.toml`: predicted peak GPU memory and peak RAM for a config, before anything loads.

The formula (docs/memory.md explains it to users):

    frozen   = Σ parameters × bytes of the dtype each is kept in (weight_dtype; fp8 layers 1 byte; VAE bf16/fp32)
    adapter  = LoRA parameters × 4 bytes × (weights + gradients + optimizer states: AdamW 2, 8-bit 0.5, …)
    act      = activations kept for the backward: a per-architecture figure at its native resolution,
               × batch × (resolution / native)², × compute bytes / 2, ÷ ~4.5 with gradient checkpointing
    swapped  = performance.blocks_to_swap: the frozen bytes of the denoiser's last N blocks, in pinned RAM;
               two of them (one running, the next copying) are on the GPU at a time
    GPU peak = max(caching: frozen + VAE encoder activations, training: UNet + what stays + adapter + act)
               - swapped + the two in flight
    RAM peak = process + (CPU training: frozen + adapter + act; GPU: the largest component while it loads,
               then what waits in RAM + swapped) + the converter's transient (OpenCLIP's fused attention)

Parameter counts are exact: each component is built on the meta device from its config and asked.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from trainer.shared.config import TrainConfig

GB = 1e9
# interpreter + libraries (+ CUDA's host mappings): the CPU figure measured by bench/memory.py (train RSS minus
# weights and adapter on SD1.5 and SDXL); the CUDA one is an estimate until bench/gpu.py runs
PROCESS_RAM = {"cpu": 0.45 * GB, "cuda": 1.6 * GB}
CUDA_CONTEXT = 0.4 * GB
OPTIMIZER_STATES = {"adamw": 2.0, "adamw8bit": 0.5, "prodigy": 4.0, "adafactor": 1.0}
# Activations, the real denoiser's size and the VAE encoder's peak are each family's figures
# (trainer.families.base.PlanFigures: estimates from public reports until bench/gpu.py measures them).
CHECKPOINTING_SAVES = 4.5


@dataclass
class Plan:
    device: str
    weight_dtype: str
    frozen_gb: dict = field(default_factory=dict)
    lora_params: int = 0
    adapter_gb: float = 0.0
    activations_gb: float = 0.0
    offloaded: list = field(default_factory=list)
    swapped_gb: float = 0.0     # performance.blocks_to_swap: block weights kept in pinned RAM
    in_flight_gb: float = 0.0   # ... of which on the GPU at a time (the block running, the next one copying)
    gpu_gb: float = 0.0
    ram_gb: float = 0.0
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        gpu = f"≈ {self.gpu_gb:.1f} GB GPU · " if self.device == "cuda" else ""
        return f"{gpu}≈ {self.ram_gb:.1f} GB RAM"


def make_plan(cfg: TrainConfig, device: str = "auto", facts: dict | None = None) -> Plan:
    from trainer.models.precision import resolve_precision

    here = torch.cuda.is_available()
    device = ("cuda" if here else "cpu") if device == "auto" else device
    # planning for a GPU that is not in this computer: assume one with bf16 (RTX 30xx and newer)
    precision = resolve_precision(cfg.performance.weight_dtype, device, None if here else True)
    family, components = _meta_components(cfg.model.path)
    figures = family.plan
    frozen = {name: _bytes(module, precision, name) for name, module in components.items()}
    lora = _lora_params(cfg, family, components)
    adapter = lora * 4 * (2 + OPTIMIZER_STATES[cfg.optimizer.name])
    act = _activations(cfg, figures, precision.compute.itemsize) * _scale(components["unet"], figures)
    offloaded = [name for name in _offloaded(cfg, family) if name in components]
    swapped, in_flight = _swapped(cfg, family, components["unet"], precision) if device == "cuda" else (0, 0)
    plan = Plan(device=device, weight_dtype=precision.name, frozen_gb={k: v / GB for k, v in frozen.items()},
                lora_params=lora, adapter_gb=adapter / GB, activations_gb=act / GB, offloaded=offloaded,
                swapped_gb=swapped / GB, in_flight_gb=in_flight / GB)
    transient = family.load_transient_bytes(components)
    # a family that encodes the captions first frees its (untrained) text encoders before the denoiser loads
    first = [n for n in family.text_encoders if family.encode_before_denoiser and n in offloaded]
    together = sum(v for k, v in frozen.items() if k not in first)
    if device == "cuda":
        staying = sum(v for k, v in frozen.items() if k not in offloaded) - swapped + in_flight
        caching = together - swapped + figures.vae_encode_bytes * _pixels(cfg, figures) * (precision.vae.itemsize / 4)
        plan.gpu_gb = (max(caching, staying + adapter + act) + CUDA_CONTEXT) / GB
        waiting = sum(frozen[k] for k in offloaded if cfg.sampling.every_n_steps and k not in first)
        plan.ram_gb = (PROCESS_RAM["cuda"] + max(max(frozen.values()) + transient, waiting + swapped)) / GB
    else:
        encoding = sum(frozen[k] for k in first) + frozen.get("vae", 0)
        plan.ram_gb = (PROCESS_RAM["cpu"] + max(encoding, together + adapter + act) + transient) / GB
    plan.warnings = _fits(plan, facts)
    return plan


def _meta_components(spec: str) -> tuple:
    """(family, {component: model on the meta device}) for a demo, a single file or a folder."""
    from trainer.families.registry import by_demo

    family = by_demo(spec)
    if family is not None:
        return family, family.meta_components(family.config_folder(family.config_name("epsilon", tiny=True)))
    from trainer.models.detect import inspect_base_model

    info = inspect_base_model(Path(spec).expanduser())
    configs = Path(spec) if info.format == "diffusers" else info.config_folder()
    return info.family, info.family.meta_components(configs)


def _swapped(cfg: TrainConfig, family, denoiser: torch.nn.Module, precision) -> tuple[int, int]:
    """(frozen bytes of the blocks performance.blocks_to_swap keeps in RAM, bytes of the two largest of them:
    the block running and the next one copying). The LoRA layers stay on the GPU: they are in `adapter`."""
    from trainer.run.block_swap import check_count

    count = cfg.performance.blocks_to_swap
    if not count:
        return 0, 0
    if not family.swap_blocks:
        family.check_config(cfg)  # a UNet family: refused as training refuses it, naming the key
    names = [f"{name}.{i}." for name in family.swap_blocks for i in range(len(getattr(denoiser, name)))]
    check_count(family, count, len(names))
    sizes = [sum(p.numel() * precision.dtype_for(denoiser, key).itemsize
                 for key, p in denoiser.named_parameters() if key.startswith(prefix)) for prefix in names[-count:]]
    return sum(sizes), sum(sorted(sizes)[-2:])


def _bytes(module: torch.nn.Module, precision, name: str) -> int:
    if name == "vae":
        return sum(p.numel() for p in module.parameters()) * precision.vae.itemsize
    return sum(p.numel() * precision.dtype_for(module, key).itemsize for key, p in module.named_parameters())


# Parameters of LoHa (two rank-r pairs) and LoKr (Kronecker factors) next to a plain LoRA of the same rank:
# LoHa exactly twice; LoKr depends on the factor, a fraction at most (counted as half, an upper estimate).
# AdaLoRA starts at 1.5x the rank (its init rank) and holds E and a moving importance score for each tensor
ALGORITHM_SIZE = {"lora": 1.0, "loha": 2.0, "lokr": 0.5, "adalora": 4.5}


def _lora_params(cfg: TrainConfig, family, components: dict) -> int:
    lc, targets = cfg.lora, family.lora
    conv = re.compile(f"^({targets.conv})$") if targets.conv else None
    blocks = [(re.compile(prefix), lc.block_ranks[i] if lc.block_ranks else lc.rank)
              for i, prefix in enumerate(targets.blocks.values())]

    def unet_rank(name: str) -> int:  # as trainer.lora.algorithms.rank_patterns assigns them
        block_rank = next((rank for prefix, rank in blocks if prefix.match(name)), lc.rank)
        return (lc.conv_rank or block_rank) if conv and conv.match(name) else block_rank

    count = _count_lora(components["unet"], targets.denoiser[lc.targets], unet_rank, lc.dora)
    if lc.train_text_encoder:
        for name in family.text_encoders:
            count += _count_lora(components[name], targets.text_encoder, lambda _name: lc.rank, lc.dora)
    return int(count * ALGORITHM_SIZE[lc.algorithm])


def _count_lora(model: torch.nn.Module, pattern: str, rank_of, dora: bool) -> int:
    """LoRA parameters of MODEL's layers matching PATTERN, `rank_of(layer name)` each."""
    regex, total = re.compile(pattern), 0
    for name, module in model.named_modules():
        if not regex.match(name):
            continue
        r = rank_of(name)
        if isinstance(module, torch.nn.Linear):
            total += r * (module.in_features + module.out_features) + (module.out_features if dora else 0)
        elif isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += r * (module.in_channels * kh * kw + module.out_channels) + \
                (module.out_channels if dora else 0)
    return total


def _pixels(cfg: TrainConfig, figures) -> float:
    return (cfg.dataset.resolution / figures.activation_resolution) ** 2


def _activations(cfg: TrainConfig, figures, compute_bytes: int) -> float:
    act = figures.activation_bytes * _pixels(cfg, figures) * cfg.schedule.batch_size * compute_bytes / 2
    return act / CHECKPOINTING_SAVES if cfg.performance.gradient_checkpointing else act


def _scale(denoiser: torch.nn.Module, figures) -> float:
    """The activation figures are for the real architectures; the tiny demo models are a sliver of that."""
    params = sum(p.numel() for p in denoiser.parameters())
    return min(1.0, params / figures.denoiser_params)


def _offloaded(cfg: TrainConfig, family) -> list[str]:
    """What leaves the GPU once the caches are full (trainer/offload.py)."""
    out = []
    if not cfg.lora.train_text_encoder and cfg.performance.cache_text_embeddings:
        out += list(family.text_encoders)
    if cfg.performance.cache_latents and cfg.dataset.center_crop:
        out.append("vae")
    return out


def _fits(plan: Plan, facts: dict | None) -> list[str]:
    if not facts:
        return []
    warnings = []
    ram = facts.get("ram", {}).get("available_gb")
    if ram and plan.ram_gb > ram:
        warnings.append(f"needs ≈ {plan.ram_gb:.1f} GB of RAM but {ram:.1f} GB is free: use weight_dtype "
                        f"fp8, or close other programs")
    gpus = facts.get("gpus") or []
    if plan.device == "cuda" and gpus and plan.gpu_gb > gpus[0]["free_gb"]:
        warnings.append(f"needs ≈ {plan.gpu_gb:.1f} GB of GPU memory but {gpus[0]['free_gb']:.1f} GB is free: "
                        "turn on gradient checkpointing, use weight_dtype fp8, or a lower resolution")
    return warnings


def register(sub) -> None:
    p = sub.add_parser("plan", help="predicted peak GPU memory and RAM for a config, before anything loads")
    p.add_argument("config", type=Path, nargs="?", help="TOML config (full or sparse)")
    p.add_argument("--demo", action="store_true", help="plan the built-in demo")
    p.add_argument("--preset", action="append", default=[], help="presets under the config, as for train")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="plan for this device (default: this computer's)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_plan(args) -> int:
    from trainer.commands.system import system_report
    from trainer.commands.train import resolve_config

    cfg = resolve_config(args, need_dataset=False)
    plan = make_plan(cfg, args.device, system_report())
    if args.json:
        print(json.dumps({**plan.to_dict(), "summary": plan.summary()}))
        return 0
    print(f"{cfg.model.path}: {plan.summary()} (frozen weights {plan.weight_dtype}, {plan.device})")
    for name, size in plan.frozen_gb.items():
        gone = " (leaves the GPU once the caches are full)" if name in plan.offloaded and plan.device == "cuda" else ""
        print(f"  {name:15} {size:6.2f} GB{gone}")
    print(f"  {'LoRA':15} {plan.adapter_gb:6.2f} GB  ({plan.lora_params:,} parameters with gradients and "
          f"optimizer state)")
    print(f"  {'activations':15} {plan.activations_gb:6.2f} GB")
    if plan.swapped_gb:
        print(f"  {'block swap':15} {plan.swapped_gb:6.2f} GB in pinned RAM ({cfg.performance.blocks_to_swap} blocks), "
              f"{plan.in_flight_gb:.2f} GB of it on the GPU at a time")
    for warning in plan.warnings:
        print(f"warning: {warning}")
    return 0
