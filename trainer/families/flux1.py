"""FLUX.1 dev and schnell: a 12 B rectified-flow transformer (19 double-stream and 38 single-stream blocks)
on 2x2-packed 16-channel latents, conditioned on T5-XXL's token states and CLIP-L's pooled output; dev also
takes a guidance input (distilled classifier-free guidance).

Users keep four files, as ComfyUI and kohya do: the transformer in Black Forest Labs' own layout
(`flux1-dev.safetensors`, bf16 or fp8), `ae.safetensors`, `clip_l.safetensors` and a T5-XXL file
(trainer.families.flux1_files finds them). The transformer loads through trainer/models/bfl_layout.py's name
map, a fused q/k/v at a time; LoRAs export in kohya's BFL names (fused layers get the pieces stacked).
"""

from __future__ import annotations

from pathlib import Path

from trainer.families.base import Family, LoraTargets, PlanFigures, TokenFacts
from trainer.families.flow import FlowMatching, refuse_ddpm_options
from trainer.families.registry import register
from trainer.families.t5_text import T5ClipText
from trainer.shared.errors import ConfigError

GB = 1e9
PREFIX = "model.diffusion_model."
_DOUBLE_ATTN = r"transformer_blocks\.\d+\.attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
_SINGLE_ATTN = r"single_transformer_blocks\.\d+\.attn\.(to_q|to_k|to_v)"
_FF = r"transformer_blocks\.\d+\.(ff|ff_context)\.net\.(0\.proj|2)|single_transformer_blocks\.\d+\.(proj_mlp|proj_out)"
_MOD = r"transformer_blocks\.\d+\.(norm1|norm1_context)\.linear|single_transformer_blocks\.\d+\.norm\.linear"
# The blocks only: LoRA on the embedders or the final layer makes InvokeAI refuse the whole file and
# diffusers drop those layers silently (measured in their loaders; see docs/export.md).
FLUX_LORA = LoraTargets(
    denoiser={"attention": f"^({_DOUBLE_ATTN}|{_SINGLE_ATTN})$",
              "attention+ff": f"^({_DOUBLE_ATTN}|{_SINGLE_ATTN}|{_FF})$",
              "full": f"^({_DOUBLE_ATTN}|{_SINGLE_ATTN}|{_FF}|{_MOD})$"},
    text_encoder=r"^.*\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))$",
    blocks={"double": r"transformer_blocks\.\d+\.", "single": r"single_transformer_blocks\.\d+\."},
    full_label="Modulation")


class Flux1(Family):
    id, label = "flux1", "FLUX.1"
    denoiser = "transformer"
    text_encoders = ("text_encoder", "text_encoder_2")   # CLIP-L, T5-XXL (diffusers' FluxPipeline names)
    trainable_text_encoders = ("text_encoder",)           # never T5: no UI applies a T5 LoRA
    demo, preset_prefix, a1111_version = "demo:flux1", "flux1", "Flux"
    tier_prefix, smallest_tier, min_gpu_gb = "flux1-", "12gb", 11.0
    view_seconds = 15.0  # 12 B parameters at 1024 px: ~2.5x SDXL per step (commonly reported it/s on a 4090)
    latent_channels = 16
    tokens = TokenFacts(chunk=1, default=512, maximum=512, tokenizer="tokenizer_t5")
    lora = FLUX_LORA
    swap_blocks = ("transformer_blocks", "single_transformer_blocks")   # 19 + 38
    plan = PlanFigures(activation_resolution=1024, activation_bytes=9.0 * GB, denoiser_params=11_901_408_320,
                       vae_encode_bytes=5.0 * GB)
    text = T5ClipText()
    objective = FlowMatching(dynamic_shift=(256, 4096, 0.5, 1.15))
    pipeline_class = "FluxPipeline"
    encode_before_denoiser = True   # T5 never shares memory with the transformer
    fixed_prediction = "flow"
    distilled_variants = ("schnell",)
    configs = {("dev", False): "flux1-dev", ("schnell", False): "flux1-schnell",
               ("dev", True): "tiny-flux1", ("schnell", True): "tiny-flux1-schnell"}

    def preview_defaults(self, variant: str = "", source: str = "") -> tuple[int, float]:
        # dev: BFL's distilled guidance 3.5 over ~20 steps; schnell: 4 steps, no guidance input
        return (4, 1.0) if variant == "schnell" else (20, 3.5)

    def licence(self, variant: str = "") -> str:
        if variant == "dev":
            return ("FLUX.1 [dev] is under the FLUX.1 [dev] Non-Commercial License: check its terms before "
                    "commercial use (schnell is Apache-2.0)")
        return ""

    def native_resolution(self, prediction_type: str = "", variant: str = "") -> int:
        return 1024

    def token_default(self, variant: str = "") -> int:
        return 256 if variant == "schnell" else 512  # what each was distilled with (FluxPipeline's defaults)

    def config_name(self, prediction_type: str, tiny: bool, variant: str = "dev") -> str:
        return self.configs[(variant or "dev", tiny)]

    def config_names(self) -> tuple[str, ...]:
        return tuple(self.configs.values())

    def variant_of_config(self, config_name: str) -> str:
        return next(v for (v, _), name in self.configs.items() if name == config_name)

    def training_warnings(self, model, training_adapter: str = "") -> list[str]:
        if model.variant != "schnell" or training_adapter:  # the adapter keeps the distillation intact
            return []
        return ["FLUX.1 schnell is timestep-distilled: a LoRA trained on it directly degrades its images "
                "(blurry, washed out) after a few hundred steps; set model.training_adapter to a schnell "
                "training adapter (ai-toolkit's ostris/FLUX.1-schnell-training-adapter), train on "
                "flux1-dev.safetensors (LoRAs made there also work on schnell), or keep the run short"]

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        refuse_ddpm_options(cfg.loss, self.label)
        if cfg.lora.algorithm not in ("lora",) or cfg.lora.dora:
            raise ConfigError(f"config key 'lora.algorithm' is '{cfg.lora.algorithm}'{' with DoRA' * cfg.lora.dora}"
                              f"; {self.label} trains plain LoRA", "the UIs load FLUX LoRAs in kohya's fused "
                              "layout, which only plain LoRA can be stacked into: set lora.algorithm = \"lora\"")
        if cfg.model.prediction_type != "auto":
            raise ConfigError(f"config key 'model.prediction_type' is '{cfg.model.prediction_type}'; "
                              f"{self.label} predicts the flow velocity", "set model.prediction_type = \"auto\"")

    # --- detection ------------------------------------------------------------------------------------
    def claims_checkpoint(self, shapes: dict[str, tuple]) -> bool:
        return _bfl_flux1(shapes) and _img_in_width(shapes) == 64

    def refuse_unclaimed(self, path: Path, shapes: dict[str, tuple]) -> None:
        from trainer.families.flux1_files import refuse_other_flux

        refuse_other_flux(path, shapes, _bfl_flux1(shapes), _img_in_width(shapes))

    def describe_checkpoint(self, info, shapes: dict[str, tuple], metadata: dict) -> None:
        hidden = shapes.get(PREFIX + "img_in.weight", shapes.get("img_in.weight", (3072,)))[0]
        info.size = "tiny" if hidden < 1024 else "full"
        info.variant = "dev" if any(k.removeprefix(PREFIX).startswith("guidance_in.") for k in shapes) else "schnell"
        info.prediction_type, info.prediction_source = "flow", "FLUX.1 (rectified flow)"
        if info.path.is_file():  # what else training needs, for the model pickers to ask about
            from trainer.families.flux1_files import companions

            found, missing = companions(info.path, {})
            info.extra.update(files={role: str(p) for role, p in found.items()}, missing_files=missing)

    def claims_folder(self, index: dict, denoiser_config: dict) -> bool:
        return index.get("_class_name") == "FluxPipeline"

    def describe_folder(self, info, denoiser_config: dict, scheduler_config: dict) -> None:
        info.size = "tiny" if denoiser_config.get("num_attention_heads", 24) < 8 else "full"
        info.variant = "dev" if denoiser_config.get("guidance_embeds") else "schnell"
        info.prediction_type, info.prediction_source = "flow", "FLUX.1 (rectified flow)"

    def claims_lora(self, keys: list[str], metadata: dict) -> bool:
        if metadata.get("lora_studio_base_config") in self.config_names():
            return True
        version = metadata.get("ss_base_model_version", "") + " " + metadata.get("modelspec.architecture", "")
        if "flux1" in version or "flux-1" in version:
            return True
        return any(k.startswith(("lora_unet_double_blocks_", "lora_unet_single_blocks_")) or
                   ".single_transformer_blocks." in k for k in keys)

    # --- loading --------------------------------------------------------------------------------------
    def tiny_components(self, seed: int = 0, variant: str = "dev") -> dict:
        import torch

        from trainer.families.flux1_files import build_components

        torch.manual_seed(seed)
        return build_components(self.config_folder(self.config_name("", True, variant)))

    def meta_components(self, configs: Path) -> dict:
        import torch

        from trainer.families.flux1_files import build_components

        with torch.device("meta"):
            parts = build_components(configs)
        parts.pop("scheduler")
        return parts

    def tokenizers(self) -> dict:
        from trainer.models.assets import load_t5_tokenizer, load_tokenizer

        return {"tokenizer": load_tokenizer(), "tokenizer_2": load_t5_tokenizer()}

    def caption_tokenizer(self):
        from trainer.models.assets import load_t5_tokenizer

        return load_t5_tokenizer()

    def load_single_file(self, path: Path, info, precision, device, files: dict | None = None) -> dict:
        from trainer.families.flux1_files import load_flux_files

        return load_flux_files(self, path, info, precision, device, files or {})

    def load_folder(self, path: Path, info, precision, device, files: dict | None = None) -> dict:
        from trainer.families.flux1_files import load_flux_folder

        return load_flux_folder(self, path, info, precision, device)

    # --- training -------------------------------------------------------------------------------------
    def conditioning(self, model, hidden, pooled, batch, latents, dtype) -> dict:
        import torch

        guidance = None
        if model.denoiser_config().get("guidance_embeds"):  # dev: the distilled guidance, 1.0 while training
            guidance = torch.full((latents.shape[0],), model.train_guidance, device=latents.device)
        text_ids = torch.zeros(hidden.shape[1], 3, device=latents.device, dtype=dtype)
        return {"encoder_hidden_states": hidden.to(dtype), "pooled_projections": pooled.to(dtype),
                "guidance": guidance, "txt_ids": text_ids}

    def predict(self, denoiser, noisy, timesteps, conditioning: dict):
        from trainer.families.flux1_files import pack, unpack

        packed, image_ids = pack(noisy)
        out = denoiser(hidden_states=packed, timestep=timesteps.to(noisy.dtype), img_ids=image_ids,
                       return_dict=False, **conditioning)[0]
        return unpack(out, noisy.shape)

    # --- previews and try-it --------------------------------------------------------------------------
    def preview_scheduler(self, sampler: str, training_scheduler):
        return training_scheduler  # FLUX samples with its own flow-matching Euler scheduler

    def preview_pipeline(self, model, scheduler):
        """Released text encoders (their work done before the transformer loaded) are left out: previews
        pass the encodings, and the pipeline would take its device from a module on `meta`."""
        from diffusers import FluxPipeline

        from trainer.models.load import released

        clip, t5 = (None if released(m) else m for m in model.text_encoders)
        return FluxPipeline(scheduler=scheduler, vae=model.vae, text_encoder=clip, tokenizer=model.tokenizers[0],
                            text_encoder_2=t5, tokenizer_2=model.tokenizers[1], transformer=model.unet)

    def prompt_kwargs(self, model, prompt: str, negative: str, device, clip_skip: int, max_tokens: int) -> dict:
        hidden, pooled = self.text.encode(model, [prompt], device, None, clip_skip, max_tokens)
        return {"prompt_embeds": hidden, "pooled_prompt_embeds": pooled, "max_sequence_length": max_tokens}

    def sampling_kwargs(self, model, steps: int, guidance: float, rescale: float) -> dict:
        """dev: the distilled guidance (3.5 is BFL's default, the previews' when none is set); schnell: none."""
        dev = model.denoiser_config().get("guidance_embeds")
        return {"num_inference_steps": steps, "guidance_scale": guidance if dev else 0.0}

    def preview_latents(self, pipe, latents, width: int, height: int):
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)

    # --- export ---------------------------------------------------------------------------------------
    def kohya_name(self, component: str, module: str, denoiser_config: dict | None) -> str:
        from trainer.families.flux1_lora import kohya_module

        return kohya_module(component, module, denoiser_config)

    def export_kohya(self, adapters: dict, denoiser_config: dict, scales: dict, dtype) -> dict:
        from trainer.families.flux1_lora import to_kohya_bfl

        return to_kohya_bfl(self, adapters, denoiser_config, scales, dtype)

    def kohya_modules(self, components: dict) -> dict:
        from trainer.families.flux1_lora import kohya_targets

        return kohya_targets(components)

    def ui_verdicts(self, shapes: dict[str, tuple], metadata: dict) -> dict[str, tuple[str, str]]:
        from trainer.families.flux1_lora import ui_verdicts

        return ui_verdicts(shapes)

    def diffusers_pieces(self, target, down, up, denoiser_config: dict) -> list:
        from trainer.families.flux1_lora import diffusers_pieces

        return diffusers_pieces(target, down, up, denoiser_config)

    diffusers_text_encoders = False   # InvokeAI and diffusers refuse text-encoder keys in that layout

    def peft_components(self, denoiser_config: dict, path: Path, tensors: dict, metadata: dict) -> dict:
        """Our own kohya -> PEFT conversion (diffusers' kohya FLUX reader works only at FLUX's real width and
        drops some layers silently): the fused layers split back exactly, CLIP-L's modules as they are. A file
        in the diffusers layout already is taken as it is."""
        from trainer.export.convert import kohya_to_diffusers
        from trainer.families.flux1_lora import diffusers_file_state

        if (ready := diffusers_file_state(tensors)) is not None:
            return ready
        state = kohya_to_diffusers(tensors, metadata, text_encoders=True)
        return {part: {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
                for part in {k.split(".", 1)[0] for k in state}}

    def diffusers_prefix(self, component: str) -> str:
        return "transformer" if component == "unet" else component

    def metadata(self, prediction_type: str, variant: str = "dev") -> dict[str, str]:
        return {"ss_base_model_version": "flux1", "ss_v2": "False",
                "modelspec.architecture": f"flux-1-{variant or 'dev'}"}

    def config_from_metadata(self, metadata: dict) -> str:
        schnell = "schnell" in metadata.get("modelspec.architecture", "")
        return self.config_name("", False, "schnell" if schnell else "dev")

    def original_layout(self, components: dict) -> dict:
        from trainer.models.bfl_layout import diffusers_to_bfl

        return diffusers_to_bfl(components["unet"].state_dict())

    def original_key(self, component: str, module: str, denoiser_config: dict) -> tuple[str, object]:
        from trainer.families.flux1_lora import bfl_rows

        return bfl_rows(component, module, denoiser_config)

    def single_files(self, components: dict, variant: str = "dev") -> dict[str, dict]:
        """The four files ComfyUI users keep (the transformer first)."""
        from trainer.families.ldm_layout import vae_file_state

        clip = {f"text_model.{k.removeprefix('text_model.')}": v
                for k, v in components["text_encoder"].state_dict().items()}
        return {f"flux1-{variant}.safetensors": self.original_layout(components),
                "ae.safetensors": vae_file_state(components["vae"]), "clip_l.safetensors": clip,
                "t5xxl_fp16.safetensors": {k: v for k, v in components["text_encoder_2"].state_dict().items()
                                           if k != "encoder.embed_tokens.weight"}}  # tied to shared.weight


def _bfl_flux1(shapes: dict) -> bool:
    keys = {k.removeprefix(PREFIX) for k in shapes}
    return "double_blocks.0.img_attn.qkv.weight" in keys and "single_blocks.0.linear1.weight" in keys and \
        not any(k.startswith("double_stream_modulation") for k in keys)


def _img_in_width(shapes: dict) -> int | None:
    shape = shapes.get(PREFIX + "img_in.weight", shapes.get("img_in.weight"))
    return shape[1] if shape else None


FLUX1 = register(Flux1())
