"""The one interface every model family implements (SD1.x/SD2.x, SDXL, and the DiTs after them).

Everything that differs between families lives behind it, and generic code (the loop, the loaders, export,
try-it, plan) asks the family instead of comparing ids. A family is registered by id in
trainer.families.registry; `lora-studio inspect --json` hands its `facts()` to the GUI, which keeps no
family tables of its own.

The strategies a family plugs in are objects of their own, so families that share one share the object:
`text` (captions -> conditioning: CLIP chunks, T5, Qwen3) and `objective` (noise, prediction target, loss:
DDPM epsilon/v, flow matching).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LoraTargets:
    """Which modules LoRA layers go on, as regexes over the module paths peft sees."""

    denoiser: dict[str, str]          # lora.targets choice (attention | attention+ff | full) -> regex
    text_encoder: str                 # every text encoder that may be trained
    conv: str | None = None           # the denoiser's 3x3 convolutions (kohya's conv_dim applies to them)
    blocks: dict[str, str] = field(default_factory=dict)  # block group -> path prefix regex, in config order
    full_label: str = "Convolutions"  # what "full" adds over "attention+ff", for people


@dataclass(frozen=True)
class PlanFigures:
    """What `lora-studio plan` cannot count from the meta-built model: measured activation and VAE figures."""

    activation_resolution: int        # the resolution the activation figure was measured at
    activation_bytes: float           # peak activations of one image at that resolution, batch 1, no checkpointing
    denoiser_params: int              # the real model's denoiser parameters (the tiny ones scale from this)
    vae_encode_bytes: float           # fp32 VAE encoder, one image at the native resolution


@dataclass(frozen=True)
class TokenFacts:
    """The main text encoder's caption limit as `dataset.max_token_length` takes it."""

    chunk: int                        # tokens per encoder pass (CLIP 75); the limit moves in whole chunks
    default: int                      # the config default for this family
    maximum: int                      # the most the family reads
    tokenizer: str                    # assets/ folder of the tokenizer the GUI counts with


class Family:
    """Base class: a family overrides what it does differently. Class attributes are facts; methods that need
    torch import it inside, so that listing and detecting families stays cheap."""

    id: str = ""                      # one vocabulary everywhere: events' `arch`, inspect, metadata lookups
    label: str = ""                   # for people: "SD 1.x", "SDXL"
    denoiser: str = "unet"            # unet | transformer: the component LoRA trains
    text_encoders: tuple[str, ...] = ("text_encoder",)
    trainable_text_encoders: tuple[str, ...] | None = None   # those lora.train_text_encoder trains (None: all)
    demo: str = ""                    # "demo:NAME" builds this family's tiny random model
    preset_prefix: str = ""           # presets/<prefix>-character.toml, <prefix>-style.toml
    tier_prefix: str = ""             # memory tiers: presets/<tier_prefix>vram-8gb.toml, ...
    smallest_tier: str = "6gb"        # the least GPU memory a tier of this family is written for
    min_gpu_gb: float = 0.0           # free GPU memory below which the wizard warns
    view_seconds: float = 1.0         # time per image view relative to SD1.5 at 512 px (the wizard's estimate)
    a1111_version: str = "Unknown"    # "sd version" of A1111's LoRA card sidecar
    invokeai_base: str = ""           # InvokeAI's base ("sd-1", "sdxl") when its SD probe files the LoRAs
                                      # (trainer.export.invokeai); "" for families it tells otherwise
    latent_channels: int = 4
    latent_factor: int = 8            # pixels per latent cell
    tokens: TokenFacts = None
    lora: LoraTargets = None
    plan: PlanFigures = None
    text = None                       # the text strategy (trainer.families.clip_text.ClipText, ...)
    objective = None                  # the objective strategy (trainer.families.ddpm.Ddpm, ...)
    encode_before_denoiser = False    # captions are encoded and the text encoders freed before it loads
    fixed_prediction = ""             # what every checkpoint of the family predicts ("": each says, DDPM)
    swap_blocks: tuple[str, ...] = () # the denoiser's lists of transformer blocks, in the order they run, that
                                      # performance.blocks_to_swap takes from the end of (trainer.run.block_swap)
    distilled_variants: tuple[str, ...] = ()  # step-distilled kinds of checkpoint (model.training_adapter)

    # --- identity -------------------------------------------------------------------------------------
    def native_resolution(self, prediction_type: str = "") -> int:
        raise NotImplementedError

    def config_name(self, prediction_type: str, tiny: bool, variant: str = "") -> str:
        """The assets/configs folder that describes this checkpoint's architecture (`variant`: a family's
        kinds of checkpoint, such as FLUX.1 dev / schnell)."""
        raise NotImplementedError

    def variant_of_config(self, config_name: str) -> str:
        return ""

    def token_default(self, variant: str = "") -> int:
        """dataset.max_token_length this family's checkpoints were made with."""
        return self.tokens.default

    def config_folder(self, name: str) -> Path:
        """The folder of config `name`: assets/configs/NAME for the built-in families."""
        from trainer.models.assets import config_folder

        return config_folder(name)

    def config_names(self) -> tuple[str, ...]:
        """Every assets/configs folder of this family (verify looks a family up by its folder)."""
        raise NotImplementedError

    def prediction_of_config(self, config_name: str) -> str:
        return "epsilon"

    def facts(self, prediction_type: str = "", variant: str = "") -> dict:
        """What front ends show and offer, as JSON: the GUI reads these, never its own tables."""
        return {"id": self.id, "label": self.label, "denoiser": self.denoiser, "variant": variant,
                "native_resolution": self.native_resolution(prediction_type),
                "preset_prefix": self.preset_prefix, "tier_prefix": self.tier_prefix,
                "smallest_tier": self.smallest_tier, "min_gpu_gb": self.min_gpu_gb,
                "view_seconds": self.view_seconds, "token_chunk": self.tokens.chunk,
                "max_tokens": self.tokens.maximum, "default_tokens": self.token_default(variant),
                "tokenizer": self.tokens.tokenizer, "targets": list(self.lora.denoiser),
                "block_groups": list(self.lora.blocks), "full_targets": self.lora.full_label,
                "text_encoders": list(self.text_encoders),
                "latent_channels": self.latent_channels, "demo": self.demo, "licence": self.licence(variant),
                "distilled": variant in self.distilled_variants}

    def preview_defaults(self, variant: str = "", source: str = "") -> tuple[int, float]:
        """(sampler steps, guidance) a preview or `generate` uses when the user leaves them at 0 / unset: what
        the model is made to be sampled with (`source`: the model's file or folder, for families that tell a
        distilled checkpoint by its name)."""
        return 20, 7.0

    def licence(self, variant: str = "") -> str:
        """The model's licence where it restricts what users may do (the model pickers name it); "" when
        it is permissive or the user's own checkpoint decides."""
        return ""

    def training_warnings(self, model, training_adapter: str = "") -> list[str]:
        """What a user should know about training on this checkpoint (sent as warning events);
        `training_adapter`: model.training_adapter."""
        return []

    def check_config(self, cfg) -> None:
        """Refuse, naming the key, a config value this family cannot train with (before anything loads)."""
        from trainer.shared.config_rules import check_block_lists
        from trainer.shared.errors import ConfigError

        check_block_lists(cfg, list(self.lora.blocks))
        if cfg.performance.blocks_to_swap and not self.swap_blocks:
            raise ConfigError(f"config key 'performance.blocks_to_swap' is {cfg.performance.blocks_to_swap}; "
                              f"{self.label}'s {self.denoiser} is not block-swapped (only the DiT families are)",
                              f"set performance.blocks_to_swap = 0 and use a memory tier for {self.label} "
                              f"(presets/{self.tier_prefix}vram-*.toml: fp8 weights, gradient checkpointing)")
        tokens, chunk = cfg.dataset.max_token_length, self.tokens.chunk
        if tokens > self.tokens.maximum or tokens % chunk:
            allowed = ", ".join(str(n) for n in range(chunk, self.tokens.maximum + 1, chunk)) if chunk > 1 \
                else f"1 to {self.tokens.maximum}"
            raise ConfigError(f"config key 'dataset.max_token_length' is {tokens}; {self.label} allows {allowed}",
                              f"captions are encoded in chunks of {chunk} tokens" if chunk > 1 else
                              f"{self.label}'s text encoder reads at most {self.tokens.maximum} tokens")

    # --- detection ------------------------------------------------------------------------------------
    def claims_checkpoint(self, shapes: dict[str, tuple]) -> bool:
        """Is this single file (its tensor names and shapes) a base model of this family?"""
        return False

    def refuse_unclaimed(self, path: Path, shapes: dict[str, tuple]) -> None:
        """Raise a ModelFileError naming what the file is, when it looks like this family's kind of model but
        no family takes it (an SDXL refiner, an unknown UNet); else do nothing."""

    def describe_checkpoint(self, info, shapes: dict[str, tuple], metadata: dict) -> None:
        """Fill `info` (trainer.models.detect.CheckpointInfo): prediction type, tiny or full, variant kind."""
        raise NotImplementedError

    def claims_folder(self, index: dict, denoiser_config: dict) -> bool:
        """Is this diffusers folder (model_index.json, the denoiser's config.json) of this family?"""
        return False

    def describe_folder(self, info, denoiser_config: dict, scheduler_config: dict) -> None:
        raise NotImplementedError

    def claims_lora(self, keys: list[str], metadata: dict) -> bool:
        """Does this LoRA file say it is for this family (metadata, or keys no other family has)?"""
        return False

    # --- loading --------------------------------------------------------------------------------------
    def tiny_components(self, seed: int = 0) -> dict:
        raise NotImplementedError

    def load_single_file(self, path: Path, info, precision, device, files: dict | None = None) -> dict:
        raise NotImplementedError

    def load_folder(self, path: Path, info, precision, device, files: dict | None = None) -> dict:
        raise NotImplementedError

    def load_transient_bytes(self, components: dict) -> int:
        """Memory the single-file conversion needs beyond the weights (tensors it computes for real)."""
        return 0

    def caption_tokenizer(self):
        """The main text encoder's tokenizer: what `dataset.max_token_length` counts in."""
        raise NotImplementedError

    def meta_components(self, configs: Path) -> dict:
        """The components built on the meta device from a config folder (plan counts their parameters)."""
        raise NotImplementedError

    def trained_encoders(self, model) -> list[tuple[str, object]]:
        """(component name, module) of the text encoders lora.train_text_encoder puts LoRA layers on."""
        names = self.trainable_text_encoders or self.text_encoders
        return [(n, m) for n, m in zip(self.text_encoders, model.text_encoders) if n in names]

    def training_scheduler(self, scheduler, prediction_type: str):
        return self.objective.training_scheduler(scheduler, prediction_type)

    # --- training -------------------------------------------------------------------------------------
    def conditioning(self, model, hidden, pooled, batch, latents, dtype) -> dict:
        """The denoiser's keyword arguments besides the noisy latents and timesteps."""
        raise NotImplementedError

    def predict(self, denoiser, noisy, timesteps, conditioning: dict):
        raise NotImplementedError

    def encode_latents(self, vae, latents):
        """A VAE sample -> the latents the denoiser works on (shifted and scaled by the VAE's factors)."""
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * vae.config.scaling_factor

    def decode_latents(self, vae, latents):
        """The denoiser's latents -> what the VAE decodes (the inverse of encode_latents)."""
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return latents / vae.config.scaling_factor + shift

    # --- previews and try-it --------------------------------------------------------------------------
    pipeline_class: str = ""          # the diffusers pipeline class (previews, and LoRA conversion in try-it)

    def diffusers_pipeline(self):
        """The diffusers pipeline class, whose `lora_state_dict` converts every LoRA layout of the family."""
        import diffusers

        return getattr(diffusers, self.pipeline_class)

    def preview_pipeline(self, model, scheduler):
        raise NotImplementedError

    def preview_scheduler(self, sampler: str, training_scheduler):
        """The scheduler previews and `generate` sample with (sampling.sampler: euler_a, dpmpp_2m_karras)."""
        from trainer.run.sampling import make_scheduler

        return make_scheduler(sampler, training_scheduler)

    def sampling_kwargs(self, model, steps: int, guidance: float, rescale: float) -> dict:
        """The pipeline's sampling arguments besides the conditioning and the size."""
        return {"num_inference_steps": steps, "guidance_scale": guidance, "guidance_rescale": rescale}

    def preview_latents(self, pipe, latents, width: int, height: int):
        """The pipeline's `output_type="latent"` result as (B, C, H, W) latents for the VAE."""
        return latents

    def prompt_kwargs(self, model, prompt: str, negative: str, device, clip_skip: int, max_tokens: int) -> dict:
        raise NotImplementedError

    # --- export ---------------------------------------------------------------------------------------
    def kohya_name(self, component: str, module: str, denoiser_config: dict | None) -> str:
        raise NotImplementedError

    def metadata(self, prediction_type: str, variant: str = "") -> dict[str, str]:
        """The keys the UIs file a LoRA by (ss_base_model_version, modelspec.architecture, ...)."""
        raise NotImplementedError

    def export_kohya(self, adapters: dict, denoiser_config: dict, scales: dict, dtype) -> dict:
        """{component: peft state} -> the kohya-layout tensors every UI applies (trainer.export.kohya)."""
        from trainer.export.kohya import kohya_tensors

        return kohya_tensors(adapters, lambda c, m: self.kohya_name(c, m, denoiser_config), scales, dtype)

    def kohya_modules(self, components: dict) -> dict[str, tuple]:
        """{kohya module: (component, module path, Linear|Conv2d, weight shape)} of every layer a LoRA of this
        family can hold, from its components (built on the meta device): what verify checks files against."""
        import torch

        out = {}
        config = dict(components["unet"].config)
        for component in ("unet", *self.text_encoders):
            for name, module in components[component].named_modules():
                if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and name:
                    try:
                        key = self.kohya_name(component, name, config)
                    except ValueError:
                        continue  # a module with no name in the UIs' scheme (never targeted)
                    out[key] = (component, name, type(module).__name__, tuple(module.weight.shape))
        return out

    def ui_verdicts(self, shapes: dict[str, tuple], metadata: dict) -> dict[str, tuple[str, str]]:
        """{UI id: (verdict, why)} for a LoRA file of this family, any trainer's (trainer.export.ui_rules):
        the layouts each UI reads, as measured in the UIs' own code. Empty: the UIs read every layout verify
        accepts (the SD families; InvokeAI's SD probe is verify's own)."""
        return {}

    def diffusers_pieces(self, target, down, up, denoiser_config: dict) -> list:
        """(diffusers module, down, up) of one kohya module for the diffusers/PEFT layout."""
        return [(target.module, down, up)]

    def peft_components(self, denoiser_config: dict, path: Path, tensors: dict, metadata: dict) -> dict:
        """{pipeline component: PEFT-layout LoRA state, alpha folded into lora_B} of any LoRA file of this
        family, for `generate` and `merge` (diffusers' own converter, with our fixes: trainer.tryit.loras)."""
        from diffusers.configuration_utils import FrozenDict

        from trainer.tryit.loras import to_peft_components

        return to_peft_components(self.diffusers_pipeline(), FrozenDict(denoiser_config), path, tensors)

    def denoiser_config(self, config_name: str) -> dict:
        """The denoiser's config.json in config folder CONFIG_NAME."""
        import json

        folder = self.config_folder(config_name)
        sub = "unet" if (folder / "unet").is_dir() else "transformer"
        return json.loads((folder / sub / "config.json").read_text(encoding="utf-8"))

    diffusers_text_encoders = True    # whether its diffusers/PEFT LoRA layout can carry text-encoder LoRA

    def diffusers_prefix(self, component: str) -> str:
        """The component's key prefix in the diffusers/PEFT layout (unet., text_encoder., transformer.)."""
        return component

    def single_files(self, components: dict, variant: str = "") -> dict[str, dict]:
        """{file name: state dict} of the files users download for a model (the base model's first)."""
        return {f"{self.id}.safetensors": self.original_layout(components)}

    def config_from_metadata(self, metadata: dict) -> str:
        """The config folder a LoRA of this family was trained against, read from metadata that lacks ours."""
        return self.config_name("epsilon", tiny=False)

    def original_layout(self, components: dict) -> dict:
        """A model's state dict in the layout of the single files users download (merge writes it)."""
        raise NotImplementedError

    def original_key(self, component: str, module: str, denoiser_config: dict) -> tuple[str, object]:
        """(single-file key of a module's weight, where in a fused weight its rows are: None for the whole
        weight, k for the k-th of three equal parts, or (first row, end row)) for merge."""
        raise NotImplementedError
