"""TrainConfig: one typed, versioned config for a run, read from and written to TOML.

Every field carries its allowed range or choices in its metadata, so validation is one generic walk and every
error names the dotted key (`lora.rank`) and what is allowed. Unknown keys are errors, not silently ignored:
a typo like `lora.rnak` would otherwise train with the default and the user would never know.

This module must stay free of torch: the GUI imports it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import tomli_w

from trainer.shared.captions import caption_extension_problem
from trainer.shared.config_rules import validate
from trainer.shared.errors import ConfigError
from trainer.shared.paths import name_problem

SCHEMA_VERSION = 1
PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"


def _opt(default: Any, help: str, *, min: float | None = None, max: float | None = None,
         choices: tuple | None = None, check: Callable[[Any], str] | None = None) -> Any:
    """CHECK(value) returns why a value is not allowed ("" when it is), for rules a range cannot say."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    path: str = _opt("demo:sd15", "diffusers folder, single .safetensors/.ckpt, or demo:sd15 / demo:sdxl")
    prediction_type: str = _opt("auto", "what the UNet predicts; auto reads it from the checkpoint",
                                choices=("auto", "epsilon", "v_prediction"))
    clip_skip: int = _opt(1, "A1111's \"Clip skip\": 2 conditions on the text encoder's second-to-last layer; "
                          "SD1.5 anime models (NAI family) are trained and used with 2, most others with 1",
                          min=1, max=2)
    vae: str = _opt("", "the model's VAE / autoencoder file when it is not found beside model.path (FLUX.1 and "
                    "Z-Image: ae.safetensors; FLUX.2 klein: flux2-vae.safetensors; ComfyUI keeps it in models/vae)")
    clip_l: str = _opt("", "FLUX.1's CLIP-L text encoder file when it is not found beside model.path "
                       "(clip_l.safetensors; ComfyUI keeps it in models/text_encoders)")
    t5: str = _opt("", "FLUX.1's T5-XXL text encoder file when it is not found beside model.path "
                   "(t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn.safetensors; ComfyUI: models/text_encoders)")
    text_encoder: str = _opt("", "Z-Image's and FLUX.2 klein's Qwen3 text encoder file when it is not found beside "
                             "model.path (qwen_3_4b.safetensors; klein 9B: qwen_3_8b.safetensors; ComfyUI: "
                             "models/text_encoders)")
    train_guidance: float = _opt(1.0, "the guidance input of guidance-distilled models while training (FLUX.1 "
                                 "dev; 1.0 as kohya and ai-toolkit train)", min=0.0, max=100.0)
    training_adapter: str = _opt("", "a LoRA (.safetensors) that un-distills a step-distilled model (FLUX.1 "
                                 "schnell, Z-Image Turbo) while training: applied frozen at every step, left out "
                                 "of previews and of the saved LoRA, so the LoRA learns only your subject and "
                                 "works on the distilled model at its few steps (ostris' training adapters for "
                                 "ai-toolkit); \"\" = none")


@dataclass
class DatasetConfig:
    path: str = _opt("", "folder of images with same-named .txt captions")
    resolution: int = _opt(512, "training resolution in pixels (the square side)", min=64, max=4096)
    repeats: int = _opt(1, "how many times each image is seen per epoch", min=1, max=10000)
    caption_extension: str = _opt(".txt", "caption sidecar extension, e.g. .txt or .caption",
                                  check=caption_extension_problem)
    center_crop: bool = _opt(True, "crop the center (true) or a random window (false)")
    flip: bool = _opt(False, "random horizontal flip; leave off for asymmetric characters")
    allow_upscale: bool = _opt(False, "let small images fill a bigger bucket (blurrier) instead of a smaller one")
    keep_tokens: int = _opt(0, "tags at the start of a caption that shuffling never moves (e.g. the trigger)",
                            min=0, max=75)
    shuffle_tags: bool = _opt(False, "shuffle comma-separated tags each time (after keep_tokens)")
    caption_dropout: float = _opt(0.0, "chance to train an image with an empty caption", min=0.0, max=1.0)
    tag_dropout: float = _opt(0.0, "chance to drop each tag (after keep_tokens)", min=0.0, max=1.0)
    max_token_length: int = _opt(225, "longest caption read, in tokens of the model's main text encoder: 75, 150 "
                                 "or 225 for the CLIP families (kohya max_token_length; encoded in 75-token "
                                 "chunks as A1111 does); the family says what it takes (`inspect`)", min=1, max=512)


@dataclass
class LoraConfig:
    rank: int = _opt(16, "LoRA rank (network dim)", min=1, max=1024)
    alpha: float = _opt(16.0, "LoRA alpha; the update is scaled by alpha/rank", min=0.0, max=4096.0)
    dropout: float = _opt(0.0, "dropout on the LoRA path", min=0.0, max=0.9)
    dora: bool = _opt(False, "weight-decomposed LoRA (DoRA)")
    targets: str = _opt("attention", "which UNet layers get LoRA",
                        choices=("attention", "attention+ff", "full"))
    train_text_encoder: bool = _opt(False, "also train LoRA on the text encoder(s)")
    algorithm: str = _opt("lora", "adapter type: lora (plain), loha (Hadamard product, LyCORIS), lokr "
                          "(Kronecker product, LyCORIS; small files for styles) or adalora (ranks move to the layers "
                          "that need them; saved as a plain LoRA); every UI loads all four",
                          choices=("lora", "loha", "lokr", "adalora"))
    lokr_factor: int = _opt(-1, "LoKr: size of the small Kronecker factor (LyCORIS factor); -1 = balanced. "
                            "LyCORIS suggests 4-8 with a high rank for detail, larger for smaller files",
                            min=-1, max=64)
    rslora: bool = _opt(False, "rank-stabilised LoRA: scale by alpha/sqrt(rank) instead of alpha/rank, so high ranks "
                        "learn as well as low ones; the saved alpha is adjusted so every UI applies the same scale")
    conv_rank: int = _opt(0, "rank of the 3x3 convolutions when targets = \"full\" (kohya conv_dim); "
                          "0 = lora.rank", min=0, max=1024)
    conv_alpha: float = _opt(0.0, "alpha of the 3x3 convolutions (kohya conv_alpha); 0 = lora.alpha",
                             min=0.0, max=4096.0)
    ema_decay: float = _opt(0.0, "keep an exponential moving average of the LoRA weights, saved beside the adapter "
                            "as NAME.ema.safetensors (smoother, less overfit); 0.999 is usual, 0 = off",
                            min=0.0, max=0.99999)
    block_ranks: list = _opt([], "rank per UNet block group as [down, mid, up], e.g. [8, 16, 32] (kohya block_dims); "
                             "[] = lora.rank everywhere; each module's rank is saved, every UI reads it")
    block_alphas: list = _opt([], "alpha per UNet block group as [down, mid, up] (kohya block_alphas); "
                              "[] = lora.alpha everywhere")
    adalora_init_rank: int = _opt(0, "AdaLoRA: rank every layer starts with before the budget is cut to lora.rank on "
                                  "average; 0 = 1.5 x lora.rank", min=0, max=1024)
    adalora_warmup: float = _opt(0.1, "AdaLoRA: share of the steps trained at the initial rank before pruning starts",
                                 min=0.0, max=0.9)
    adalora_final: float = _opt(0.3, "AdaLoRA: share of the steps, at the end, trained with the final ranks fixed",
                                min=0.0, max=0.9)
    init_from: str = _opt("", "start from this LoRA file (.safetensors, kohya or diffusers layout) instead of "
                          "zero, to continue an earlier or downloaded LoRA; its rank is adopted; \"\" = fresh")


@dataclass
class OptimizerConfig:
    name: str = _opt("adamw", "optimizer", choices=("adamw", "adamw8bit", "prodigy", "adafactor"))
    lr: float = _opt(1e-4, "UNet learning rate", min=0.0, max=10.0)
    text_encoder_lr: float = _opt(5e-5, "text-encoder learning rate", min=0.0, max=10.0)
    weight_decay: float = _opt(1e-2, "decoupled weight decay", min=0.0, max=1.0)
    betas: list = _opt([0.9, 0.999], "Adam betas")
    eps: float = _opt(1e-8, "Adam epsilon", min=0.0, max=1.0)
    max_grad_norm: float = _opt(1.0, "gradient clipping norm; 0 disables", min=0.0, max=1000.0)
    loraplus_ratio: float = _opt(0.0, "LoRA+: the B (up) matrices learn this many times faster than A (kohya "
                                 "loraplus_lr_ratio; 16 is the paper's choice); 0 = off", min=0.0, max=1000.0)
    block_lr: list = _opt([], "learning-rate multipliers per UNet block group as [down, mid, up], e.g. [0.5, 1, 1] "
                          "(kohya down_lr_weight / mid_lr_weight / up_lr_weight); 0 freezes a group; [] = 1 everywhere")


@dataclass
class ScheduleConfig:
    max_steps: int = _opt(1000, "optimizer steps to train", min=1, max=10_000_000)
    epochs: int = _opt(0, "train this many epochs instead of max_steps; 0 = use max_steps", min=0, max=100_000)
    batch_size: int = _opt(1, "images per step", min=1, max=1024)
    gradient_accumulation: int = _opt(1, "micro-batches per optimizer step", min=1, max=1024)
    lr_scheduler: str = _opt("constant", "learning-rate schedule",
                             choices=("constant", "constant_with_warmup", "cosine",
                                      "cosine_with_restarts", "linear"))
    warmup_steps: int = _opt(0, "linear warm-up steps", min=0, max=10_000_000)
    num_cycles: int = _opt(1, "restarts for cosine_with_restarts", min=1, max=1000)
    seed: int = _opt(42, "random seed for noise, timesteps and data order", min=0, max=2**32 - 1)


@dataclass
class LossConfig:
    min_snr_gamma: float = _opt(0.0, "min-SNR weighting gamma (5 is common); 0 disables", min=0.0, max=100.0)
    noise_offset: float = _opt(0.0, "noise offset (0.05-0.1 helps very dark/bright images)", min=0.0, max=1.0)
    prior_loss_weight: float = _opt(1.0, "loss weight of regularisation images", min=0.0, max=100.0)
    type: str = _opt("l2", "l2 (mean squared error); huber / smooth_l1 are less thrown by outlier images and "
                     "noisy captions (kohya's loss_type); l1 rarely helps", choices=("l2", "l1", "huber", "smooth_l1"))
    huber_c: float = _opt(0.1, "Huber threshold: errors below it count quadratically, above it linearly",
                          min=0.001, max=1.0)
    huber_schedule: str = _opt("snr", "how the Huber threshold follows the timestep (snr is kohya's default)",
                               choices=("snr", "exponential", "constant"))
    min_timestep: int = _opt(0, "lowest noise timestep trained (kohya min_timestep); raise it to skip fine detail",
                             min=0, max=999)
    max_timestep: int = _opt(1000, "one past the highest timestep trained (kohya max_timestep); lower it to keep "
                             "composition and learn detail", min=1, max=1000)
    multires_noise_iterations: int = _opt(0, "multi-resolution (pyramid) noise levels; 6-10 helps contrast and "
                                          "colour; 0 disables", min=0, max=16)
    multires_noise_discount: float = _opt(0.3, "weight falloff per pyramid level (0.3 kohya default; 0.8 stronger)",
                                          min=0.0, max=1.0)
    input_perturbation: float = _opt(0.0, "input-perturbation noise (kohya ip_noise_gamma); 0.1 is usual; 0 "
                                     "disables", min=0.0, max=1.0)
    debiased_estimation: bool = _opt(False, "weight each timestep by 1/sqrt(SNR) (debiased estimation); an "
                                     "alternative to min_snr_gamma")
    zero_terminal_snr: bool = _opt(False, "rescale the noise schedule to reach pure noise (zero terminal SNR, "
                                   "v-prediction only); on by itself for checkpoints that say so (ztsnr key)")
    timestep_shift: float = _opt(1.0, "shift the drawn timesteps toward noisier ones: t' = s·t / (1 + (s-1)·t) "
                                 "within min/max timestep (SD3's shift); 2-3 helps composition at high "
                                 "resolution, below 1 favours detail; 1 = off", min=0.1, max=10.0)
    masked: bool = _opt(False, "masked loss: only the white parts of each image's mask count (a same-named image "
                        "in a masks/ folder in the dataset, else the image's alpha channel; none = whole image)")


@dataclass
class SamplingConfig:
    every_n_steps: int = _opt(250, "preview images every N steps; 0 = no samples", min=0, max=10_000_000)
    at_start: bool = _opt(True, "sample at step 0 as a baseline")
    prompts: list = _opt(["a photo"], "prompts for preview images; each may end with kohya's per-prompt options "
                         "--n negative --w width --h height --s steps --l CFG scale --d seed")
    negative_prompt: str = _opt("", "negative prompt for previews")
    seed: int = _opt(1234, "fixed seed so previews are comparable across steps", min=0, max=2**32 - 1)
    steps: int = _opt(0, "sampler steps per preview; 0 = the model's own (SD and FLUX.1 dev 20, Z-Image and klein "
                      "base 28, Z-Image Turbo 8, FLUX.1 schnell and klein 4)", min=0, max=200)
    sampler: str = _opt("euler_a", "preview sampler", choices=("euler_a", "dpmpp_2m_karras"))
    guidance_scale: float = _opt(0.0, "classifier-free guidance scale; 0 = the model's own (SD 7, FLUX.1 dev's "
                                 "distilled guidance 3.5, Z-Image and klein base 4, none for schnell, Turbo and "
                                 "klein); 1 = no guidance", min=0.0, max=50.0)
    width: int = _opt(0, "preview width; 0 = dataset.resolution", min=0, max=4096)
    height: int = _opt(0, "preview height; 0 = dataset.resolution", min=0, max=4096)
    use_ema: bool = _opt(False, "previews show the EMA weights (lora.ema_decay) instead of the trained ones")


@dataclass
class ValidationConfig:
    fraction: float = _opt(0.0, "share of the images held out of training to measure validation loss (at "
                           "least one image); a `validation = true` subset in dataset.toml does the same",
                           min=0.0, max=0.5)
    every_n_steps: int = _opt(50, "validation loss every N steps (and at the end); 0 = never", min=0,
                              max=10_000_000)
    timesteps: int = _opt(4, "fixed timesteps per held-out image, spread over the trained range", min=1, max=50)


@dataclass
class SavingConfig:
    every_n_steps: int = _opt(250, "save a checkpoint every N steps; 0 = only at the end", min=0,
                              max=10_000_000)
    output_name: str = _opt("lora", "file name of the adapter (without .safetensors); a name, not a path",
                            check=name_problem)
    keep_last: int = _opt(3, "how many periodic checkpoints to keep; 0 = all", min=0, max=100_000)
    dtype: str = _opt("fp16", "precision of the saved adapter", choices=("fp16", "bf16", "fp32"))
    trigger_phrase: str = _opt("", "trigger words, written into the adapter's metadata")


@dataclass
class PerformanceConfig:
    mixed_precision: str = _opt("auto", "auto = bf16 where the GPU supports it, else fp16; no on CPU",
                                choices=("auto", "no", "fp16", "bf16"))
    weight_dtype: str = _opt("auto", "dtype of the frozen base weights: auto = bf16 on GPUs that have it, fp16 on "
                             "other CUDA GPUs, fp32 on CPU; fp8 halves them again (computed in bf16/fp16)",
                             choices=("auto", "fp32", "bf16", "fp16", "fp8"))
    gradient_checkpointing: bool = _opt(False, "trade compute for memory")
    attention: str = _opt("sdpa", "attention kernel; xformers only when installed on CUDA",
                          choices=("sdpa", "xformers"))
    cache_latents: bool = _opt(True, "encode each image once instead of every step")
    cache_text_embeddings: bool = _opt(True, "encode each caption once when the text encoder is frozen")
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N")
    num_workers: int = _opt(0, "data-loader worker processes", min=0, max=64)
    report_every_n_steps: int = _opt(0, "read the loss back from the device (progress, NaN check) every N steps; "
                                     "0 = auto: every step on CPU, every 10 on a GPU, where each read waits for "
                                     "the GPU to finish", min=0, max=1000)
    compile: bool = _opt(False, "torch.compile the UNet's transformer blocks (regional compilation): faster "
                                "steps on a GPU after a one-time compile (its time is logged)")
    blocks_to_swap: int = _opt(0, "DiT families (FLUX.1, Z-Image, FLUX.2 klein): keep the frozen weights of the "
                               "last N transformer blocks in (pinned) CPU RAM and copy each to the GPU just before "
                               "it runs, overlapped with compute (kohya's --blocks_to_swap): less GPU memory, "
                               "slower steps and that much more RAM; needs gradient_checkpointing; 0 = off",
                               min=0, max=1000)


@dataclass
class TrainConfig:
    schema_version: int = SCHEMA_VERSION
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    saving: SavingConfig = field(default_factory=SavingConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def get(self, dotted: str) -> Any:
        section, key = _split_key(dotted)
        return getattr(getattr(self, section), key)


SECTIONS = {f.name: f.default_factory for f in fields(TrainConfig) if f.name != "schema_version"}


def _split_key(dotted: str) -> tuple[str, str]:
    parts = dotted.split(".")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(f"unknown config key '{dotted}'",
                          f"keys look like section.name; sections: {', '.join(SECTIONS)}")
    section_type = SECTIONS[parts[0]]
    if parts[1] not in {f.name for f in fields(section_type)}:
        raise ConfigError(f"unknown config key '{dotted}'", _known_keys_hint(parts[0]))
    return parts[0], parts[1]


def _known_keys_hint(section: str) -> str:
    names = [f.name for f in fields(SECTIONS[section])]
    return f"known keys in [{section}]: {', '.join(names)}"


def _coerce(dotted: str, value: Any, expected: type, meta: dict) -> Any:
    """Check one value against its field's type and range; return it in the field's type."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is list and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"config key '{dotted}' must be {expected.__name__}, got {value!r}",
                          meta.get("help", ""))
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"config key '{dotted}' is {value!r}; allowed: {', '.join(meta['choices'])}",
                          meta.get("help", ""))
    lo, hi = meta.get("min"), meta.get("max")
    # NaN compares false with everything, so it would slip past both bounds; infinity is never meant either
    out_of_range = isinstance(value, float) and not math.isfinite(value)
    if out_of_range or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"config key '{dotted}' is {value}; allowed range is {lo} to {hi}",
                          meta.get("help", ""))
    if meta.get("check") and (problem := meta["check"](value)):
        raise ConfigError(f"config key '{dotted}' is {value!r}: {problem}", meta.get("help", ""))
    return value


def from_dict(data: dict, base: TrainConfig | None = None) -> TrainConfig:
    """Apply a (possibly sparse) nested dict onto `base` (defaults if None), validating every key."""
    cfg = copy.deepcopy(base) if base else TrainConfig()
    for section, values in data.items():
        if section == "schema_version":
            _check_schema(values)
            continue
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section '[{section}]'", f"sections: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section '[{section}]' must be a table of keys")
        for key, value in values.items():
            set_key(cfg, f"{section}.{key}", value)
    validate(cfg)
    return cfg


def _check_schema(version: Any) -> None:
    if version != SCHEMA_VERSION:
        raise ConfigError(f"config key 'schema_version' is {version!r}; this LoRA Studio reads version "
                          f"{SCHEMA_VERSION}", "re-save the config from this version of LoRA Studio")


def set_key(cfg: TrainConfig, dotted: str, value: Any) -> None:
    section, key = _split_key(dotted)
    obj = getattr(cfg, section)
    hints = get_type_hints(type(obj))
    meta = next(f.metadata for f in fields(obj) if f.name == key)
    setattr(obj, key, _coerce(dotted, value, hints[key], meta))


def parse_override(text: str) -> tuple[str, Any]:
    """`lora.rank=16` -> ('lora.rank', 16). Values are TOML literals; bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}' is not KEY=VALUE", "for example: --set lora.rank=16")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}", "check the path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", "fix the line it names") from None


def load(path: Path, overrides: list[str] = (), base: TrainConfig | None = None) -> TrainConfig:
    """Load a config (full or sparse) over `base`, then apply `--set` overrides."""
    data = read_toml(path)
    try:
        cfg = from_dict(data, base)
    except ConfigError as exc:  # name the file too: with presets stacked, the key alone is ambiguous
        raise ConfigError(f"{path}: {exc.message}", exc.hint) from None
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    for text in overrides:
        set_key(cfg, *parse_override(text))
    validate(cfg)
    return cfg


def load_preset(name: str, base: TrainConfig | None = None) -> TrainConfig:
    """A preset is a sparse overlay (on `base`, else the defaults), found by name in presets/ or by path."""
    path = Path(name) if name.endswith(".toml") else PRESETS_DIR / f"{name}.toml"
    if not path.exists():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))
        raise ConfigError(f"preset '{name}' not found", f"known presets: {', '.join(known)}")
    return load(path, base=base)


def save(cfg: TrainConfig, path: Path) -> None:
    from trainer.shared.fsutil import atomic_write_text  # local: keeps this module's import surface tiny

    atomic_write_text(Path(path), cfg.to_toml())
