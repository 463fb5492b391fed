"""The wizard's decisions, free of Qt: which presets, which memory tier, how many repeats and epochs, and
one line of why for each setting. Kept apart from the pages so the choices can be tested directly.

A plan is presets stacked on the defaults (kind preset, then memory tier) plus a few values computed from
the user's images and GPU. Every value the user sees comes from trainer.shared.config, so it is validated the
same way as a hand-written config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trainer.shared import config as config_mod
from trainer.shared import steps as step_count
from trainer.shared.dataset_layout import Subset
from trainer.shared.errors import UserError
from trainer.shared.tiers import memory_tier

KINDS = ("character", "style")
EPOCHS = 10
# Image views (images x repeats x epochs) a run should land near: SeaArt's guidance of 1500-3000 steps for
# characters and 3000-6000 for styles at batch size 1 (see presets/sd15-character.toml for the sources).
TARGET_VIEWS = {"character": 2000, "style": 4000}
MAX_REPEATS = 50
DEMO_STEPS = 120  # the tiny random model only shows the flow; a couple of minutes at most on a CPU
# Rough seconds per image view of SD1.5 at 512 px for each GPU size, from commonly reported it/s (RTX 3060
# ~2 it/s at batch 1, RTX 4090 ~7 it/s); a family's `view_seconds` fact says how many times slower its own
# model is at its resolution (the engine's facts). The run page replaces this with the measured ETA.
SECONDS_PER_VIEW = {"6gb": 0.8, "8gb": 0.6, "12gb": 0.5, "16gb": 0.3, "24gb": 0.15, "cpu": 20.0}
DEMO_SECONDS_PER_VIEW = 0.1


@dataclass
class Gpu:
    name: str
    total_gb: float
    free_gb: float
    bf16: bool = False


@dataclass
class SystemInfo:
    """What `lora-studio system --json` reported; the wizard never imports torch itself."""
    gpus: list[Gpu] = field(default_factory=list)
    optional: list[dict] = field(default_factory=list)

    @classmethod
    def from_report(cls, report: dict) -> SystemInfo:
        gpus = [Gpu(g["name"], g["total_gb"], g["free_gb"], g.get("bf16", False)) for g in report.get("gpus", [])]
        return cls(gpus, report.get("optional", []))

    @property
    def gpu(self) -> Gpu | None:
        return max(self.gpus, key=lambda g: g.free_gb) if self.gpus else None

    def describe(self) -> str:
        gpu = self.gpu
        if gpu is None:
            return "No CUDA GPU found: training runs on the CPU (fine for the demo, very slow for real models)."
        return (f"{gpu.name}: {gpu.free_gb:.1f} of {gpu.total_gb:.1f} GB free, "
                f"bf16 {'supported' if gpu.bf16 else 'not supported (fp16 is used)'}")


@dataclass
class Choice:
    key: str
    value: object
    why: str


@dataclass
class Plan:
    config: config_mod.TrainConfig
    presets: list[str]
    tier: str
    choices: list[Choice]
    images: int
    steps: int
    seconds: float
    warnings: list[str] = field(default_factory=list)


def choose_tier(family: dict, system: SystemInfo) -> tuple[str, str]:
    """The memory tier of the family's presets (its `tier_prefix`, `smallest_tier`) that fits the GPU."""
    gpu = system.gpu
    if gpu is None:
        return "cpu", "no CUDA GPU was found, so the CPU settings apply (fp32, batch size 1)"
    tier = memory_tier(family["tier_prefix"], gpu.free_gb, family["smallest_tier"])
    size = tier.rsplit("-", 1)[-1]
    return tier, f"{gpu.name} has {gpu.free_gb:.1f} GB free: the {size.upper()} memory settings fit"


def repeats_and_epochs(kind: str, images: int) -> tuple[int, int, str]:
    target = TARGET_VIEWS[kind]
    per_epoch = target / EPOCHS
    if images >= per_epoch:
        epochs = max(2, round(target / images))
        return 1, epochs, (f"{images} images are plenty: each is seen once per epoch, {epochs} epochs ≈ "
                           f"{images * epochs} image views (a {kind} needs about {target})")
    repeats = max(1, min(MAX_REPEATS, round(per_epoch / images)))
    return repeats, EPOCHS, (f"{images} images × {repeats} repeats × {EPOCHS} epochs ≈ "
                             f"{images * repeats * EPOCHS} image views (a {kind} needs about {target})")


def make_plan(kind: str, family: dict, model_path: str, dataset: Path, images: int, system: SystemInfo,
              trigger: str = "", prompts: list[str] | None = None, class_word: str = "",
              name: str = "") -> Plan:
    """FAMILY: the model family's facts from the engine (`inspect --json`): presets, tiers, resolution."""
    demo = model_path.startswith("demo:")
    tier, tier_why = choose_tier(family, system)
    presets = [f"{family['preset_prefix']}-{kind}", tier]
    cfg = config_mod.TrainConfig()
    for preset in presets:
        cfg = config_mod.load_preset(preset, base=cfg)
    repeats, epochs, data_why = repeats_and_epochs(kind, max(images, 1))
    cfg.model.path, cfg.dataset.path = model_path, str(dataset)
    cfg.dataset.repeats, cfg.schedule.epochs = repeats, epochs
    _name_and_trigger(cfg, kind, trigger, class_word, name, prompts)
    native, cap = family["native_resolution"], tier_resolution(tier)
    cfg.dataset.resolution = min(native, cap or native)  # the base's own (SDXL 1024), unless the tier caps it
    if demo:
        _demo_overrides(cfg)
        data_why = f"the demo's short run: {DEMO_STEPS} steps"
    steps = estimate_steps(cfg, dataset, images)
    _spread_samples(cfg, steps)
    choices = _preset_choices(cfg, kind, family, tier, tier_why, system)
    if demo:
        choices.insert(0, Choice("model.path", model_path, "the built-in tiny model: 64 px, rank 4 and a short "
                                 "run, to show the flow; its images are noise because its weights are random"))
    choices.append(Choice("dataset.repeats / schedule.epochs", f"{cfg.dataset.repeats} / {cfg.schedule.epochs}"
                          if not demo else f"{steps} steps", data_why))
    choices.append(Choice("sampling.every_n_steps", cfg.sampling.every_n_steps,
                          "previews at the start and about 8 times during the run, to watch it learn"))
    config_mod.validate(cfg)
    per_view = DEMO_SECONDS_PER_VIEW if demo else \
        SECONDS_PER_VIEW[tier.rsplit("-", 1)[-1]] * (1.0 if tier == "cpu" else family["view_seconds"])
    seconds = steps * cfg.schedule.batch_size * per_view * 1.1
    return Plan(cfg, presets, tier, choices, images, steps, seconds, _warnings(family, tier, system, images))


def _name_and_trigger(cfg, kind, trigger, class_word, name, prompts) -> None:
    cfg.saving.trigger_phrase = ", ".join(w for w in (trigger, class_word) if w)
    cfg.saving.output_name = name or cfg.saving.output_name
    if cfg.dataset.keep_tokens:  # the trigger (and class word) lead every caption: never shuffled away
        cfg.dataset.keep_tokens = len([w for w in (trigger, class_word) if w]) or 1
    cfg.sampling.prompts = prompts or default_prompts(kind, trigger, class_word)


def _preset_choices(cfg, kind, family, tier, tier_why, system) -> list[Choice]:
    te = cfg.lora.train_text_encoder
    gpu = system.gpu
    precision = "fp32 on the CPU" if gpu is None else ("bf16" if gpu.bf16 else "fp16 (this GPU has no bf16)")
    denoiser = "UNet" if family.get("denoiser") == "unet" else "transformer"
    return [
        Choice("preset", f"{family['preset_prefix']}-{kind} + {tier}",
               f"the {kind} recipe for {family['label']}, with {tier_why}"),
        Choice("lora.rank / lora.alpha", f"{cfg.lora.rank} / {cfg.lora.alpha:g}",
               "a single subject needs little capacity" if kind == "character" else
               "a style touches every layer's texture and colour, so it gets more capacity"),
        Choice("lora.targets", cfg.lora.targets, _targets_why(cfg.lora.targets, family)),
        Choice("lora.train_text_encoder", te, "teaches the trigger word its meaning" if te else
               "the text encoder stays as it is: " + ("captions describe content, the style goes into "
                                                      "the LoRA" if kind == "style" else
                                                      "the recipe's choice, and its outputs can be cached")),
        Choice("optimizer.lr", cfg.optimizer.lr, f"the {denoiser} rate the recipe was tuned with"),
        Choice("schedule.batch_size", cfg.schedule.batch_size, f"fits the memory: {tier_why}"),
        Choice("performance.gradient_checkpointing", cfg.performance.gradient_checkpointing,
               "saves several GB of activations for ~30% more time per step" + (
                   "; block swap needs it" if cfg.performance.blocks_to_swap else "")
               if cfg.performance.gradient_checkpointing else "not needed with this much memory: faster"),
        Choice("performance.cache_latents", cfg.performance.cache_latents,
               "each image goes through the VAE once, not every step"),
        Choice("performance.mixed_precision", precision,
               "half precision halves the memory of the frozen model" if gpu else "a CPU has no fast fp16"),
        Choice("performance.weight_dtype", cfg.performance.weight_dtype,
               f"the frozen {denoiser} in float8: a quarter of fp32 (docs/memory.md)" if cfg.performance.weight_dtype == "fp8"
               else f"frozen weights in {precision}, the most exact that fits"),
        *_swap_choice(cfg, denoiser),
        *_resolution_choice(cfg, family, tier),
    ]


def tier_resolution(tier: str) -> int | None:
    """The training resolution a memory tier caps the run at (FLUX.1 at 512 px on 12 GB), if it does."""
    path = config_mod.PRESETS_DIR / f"{tier}.toml"
    return config_mod.read_toml(path).get("dataset", {}).get("resolution") if path.exists() else None


def _resolution_choice(cfg, family, tier) -> list[Choice]:
    native = family["native_resolution"]
    if cfg.dataset.resolution >= native or cfg.dataset.resolution != tier_resolution(tier):
        return []  # the native size, or the demo's 64 px (its own line says so)
    return [Choice("dataset.resolution", cfg.dataset.resolution,
                   f"below {family['label']}'s native {native} px to fit this memory tier ({tier}); the LoRA still "
                   f"works at {native} px, a little less sharp in detail")]


def _swap_choice(cfg, denoiser: str) -> list[Choice]:
    swap = cfg.performance.blocks_to_swap
    if not swap:
        return []
    return [Choice("performance.blocks_to_swap", swap,
                   f"the fp8 {denoiser} does not fit beside the training: its last {swap} blocks wait in CPU RAM "
                   "and visit the GPU one at a time (slower steps, more RAM; docs/memory.md)")]


def _targets_why(targets: str, family: dict) -> str:
    if targets == "attention":
        return "the subject lives in attention"
    if targets == "attention+ff":
        return "the feed-forward layers carry texture and colour too"
    if family.get("denoiser") == "unet":
        return "convolutions learn brush strokes and texture too (LoCon)"
    return f"every layer of the blocks, {family.get('full_targets', 'all').lower()} included"


def _warnings(family: dict, tier: str, system: SystemInfo, images: int) -> list[str]:
    out = []
    gpu = system.gpu
    need = family["min_gpu_gb"]
    if need and gpu is not None and gpu.free_gb < need:
        out.append(f"{family['label']} needs about {need:.0f} GB of free GPU memory and {gpu.name} has "
                   f"{gpu.free_gb:.1f} GB free: close other programs, or train on a smaller model.")
    if tier == "cpu":
        out.append("Without a CUDA GPU a real model trains for many hours; the built-in demo model shows the "
                   "whole flow in a minute.")
    if images < 5:
        out.append(f"Only {images} image(s): 10-30 varied images give a LoRA that generalises.")
    return out


def _demo_overrides(cfg: config_mod.TrainConfig) -> None:
    demo = config_mod.load_preset("demo")
    cfg.dataset.resolution, cfg.lora.rank, cfg.lora.alpha = 64, demo.lora.rank, demo.lora.alpha
    cfg.optimizer.lr, cfg.sampling.steps = demo.optimizer.lr, demo.sampling.steps
    cfg.schedule.epochs, cfg.schedule.max_steps = 0, DEMO_STEPS
    cfg.schedule.warmup_steps = 0
    cfg.performance.blocks_to_swap = 0  # the tiny model has a handful of blocks and fits anywhere


def estimate_steps(cfg: config_mod.TrainConfig, dataset: Path, images: int) -> int:
    """The engine's count (trainer.shared.steps) on the dataset's images; before any image is in the
    folder, on IMAGES square images at the training resolution."""
    try:
        items = step_count.scan(dataset)
    except UserError:
        items = []
    if not items:
        side = cfg.dataset.resolution
        items = [step_count.SizedImage(Path(dataset), Subset(Path(dataset), "images"), side, side)] * max(images, 1)
    return step_count.steps_for(cfg, items)[1]


def _spread_samples(cfg: config_mod.TrainConfig, steps: int) -> None:
    every = max(1, round(steps / 8 / 10) * 10) if steps >= 80 else max(1, steps // 4)
    cfg.sampling.every_n_steps = cfg.saving.every_n_steps = every


def default_prompts(kind: str, trigger: str, class_word: str = "") -> list[str]:
    subject = " ".join(w for w in (trigger, class_word) if w) or "the subject"
    if kind == "character":
        return [f"{subject}, portrait, looking at viewer", f"{subject}, full body, standing in a park",
                f"{subject}, sitting at a cafe table, soft light"]
    style = f"in the style of {trigger}" if trigger else "in this style"
    return [f"a lighthouse on a cliff at sunset, {style}", f"portrait of an old fisherman, {style}",
            f"a bowl of fruit on a wooden table, {style}"]


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {max(1, round(seconds))} seconds"
    if seconds < 5400:
        return f"about {round(seconds / 60)} minutes"
    return f"about {seconds / 3600:.1f} hours"
