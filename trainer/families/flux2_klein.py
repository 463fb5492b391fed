"""FLUX.2 klein (Black Forest Labs; 4B Apache-2.0, 9B non-commercial): a rectified-flow DiT (double- and
single-stream blocks, modulation shared per stream) on the FLUX.2 VAE's 32-channel latents, 2x2-patchified to
128 channels and normalised by the VAE's batch-norm statistics; conditioned on Qwen3's hidden states of
layers 9, 18 and 27 stacked per token (Qwen3-4B for 4B, Qwen3-8B for 9B), no guidance input.

Users keep three files: `flux-2-klein-base-4b.safetensors` (or -9b; the distilled `flux-2-klein-4b` has the
same layout), `qwen_3_4b.safetensors` / `qwen_3_8b.safetensors` and `flux2-vae.safetensors`
(trainer/families/klein_files.py). LoRAs export as `diffusion_model.` + BFL names, q/k/v fused, lora_A/lora_B,
no `.alpha` (trainer/families/klein_lora.py), their metadata saying 4B or 9B.
"""

from __future__ import annotations

from pathlib import Path

from trainer.families.base import Family, LoraTargets, PlanFigures, TokenFacts
from trainer.families.flow import FlowMatching
from trainer.families.qwen_text import QwenText, QwenTokenizers
from trainer.families.registry import register
from trainer.families.zimage import shared_checks
from trainer.models.qwen_prompts import KLEIN
from trainer.shared.errors import ModelFileError

GB = 1e9
_ATTN = (r"transformer_blocks\.\d+\.attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
         r"|single_transformer_blocks\.\d+\.attn\.(to_qkv_mlp_proj|to_out)")
_FF = r"transformer_blocks\.\d+\.(ff|ff_context)\.(linear_in|linear_out)"
_MOD = r"(double_stream_modulation_img|double_stream_modulation_txt|single_stream_modulation)\.linear"
KLEIN_LORA = LoraTargets(
    denoiser={"attention": f"^({_ATTN})$", "attention+ff": f"^({_ATTN}|{_FF})$",
              "full": f"^({_ATTN}|{_FF}|{_MOD})$"},
    text_encoder=r"^$",  # Qwen3 is never trained: no UI applies a LoRA to it
    blocks={"double": r"transformer_blocks\.\d+\.", "single": r"single_transformer_blocks\.\d+\."},
    full_label="Modulation")
SIZES = {"4b": "flux2-klein-4b", "9b": "flux2-klein-9b"}
KLEIN_BASE = {"4b": "flux-2-klein-base-4b.safetensors", "9b": "flux-2-klein-base-9b.safetensors"}
VARIANT_OF = {"flux2-klein-4b": "4b", "flux2-klein-9b": "9b"}


def distilled(path) -> bool:
    """BFL name the undistilled klein `…-base-…` (flux-2-klein-base-4b) and the step-distilled one without it; the
    two share one layout, so the name is all that tells them apart."""
    return "base" not in Path(str(path)).name.lower()


class Flux2Klein(QwenTokenizers, Family):
    id, label = "flux2-klein", "FLUX.2 klein"
    denoiser = "transformer"
    text_encoders = ("text_encoder",)
    demo, preset_prefix, a1111_version = "demo:flux2-klein", "klein", "Unknown"
    fixed_prediction = "flow"  # the demo (demo:…) has no file to say so
    tier_prefix, smallest_tier, min_gpu_gb = "klein-", "8gb", 7.5
    view_seconds = 6.0  # 4 B at 1024 px: about a third of FLUX.1's 12 B per step
    latent_channels, latent_factor = 128, 16
    tokens = TokenFacts(chunk=1, default=512, maximum=512, tokenizer="tokenizer_qwen3")
    lora = KLEIN_LORA
    swap_blocks = ("transformer_blocks", "single_transformer_blocks")   # 4B: 5 + 20, 9B: 8 + 24
    # activations: FLUX.1's measured 9 GB scaled by width (3072, as FLUX.1) and depth (5 + 20 vs 19 + 38
    # blocks); an estimate until measured on a GPU
    plan = PlanFigures(activation_resolution=1024, activation_bytes=5.0 * GB, denoiser_params=3_876_000_000,
                       vae_encode_bytes=5.0 * GB)
    text = QwenText(KLEIN)
    # FLUX.2's resolution-dependent shift over image tokens (already 2x2 patches: patch 1)
    objective = FlowMatching(dynamic_shift=(256, 4096, 0.5, 1.15), patch=1)
    pipeline_class = "Flux2KleinPipeline"
    encode_before_denoiser = True
    fixed_prediction = "flow"
    diffusers_text_encoders = False

    def training_warnings(self, model, training_adapter: str = "") -> list[str]:
        name = Path(model.source).name
        if model.source.startswith("demo:") or not distilled(name) or training_adapter:
            return []
        return [f"{name} is the step-distilled FLUX.2 klein: LoRAs trained on it directly come out blurry or "
                f"grey; train on the base model ({KLEIN_BASE.get(model.variant, KLEIN_BASE['4b'])}, the one "
                "BFL publish for fine-tuning): LoRAs made there work on the distilled model too"]

    def preview_defaults(self, variant: str = "", source: str = "") -> tuple[int, float]:
        # the distilled klein: 4 steps, no CFG (BFL's); base: real CFG, 28 steps for a preview (50 for finals)
        return (4, 1.0) if distilled(source) else (28, 4.0)

    def licence(self, variant: str = "") -> str:
        if variant == "9b":
            return ("FLUX.2 klein 9B is under the FLUX Non-Commercial License: training and using it for "
                    "commercial work needs a licence from Black Forest Labs (the 4B model is Apache-2.0)")
        return ""

    def native_resolution(self, prediction_type: str = "", variant: str = "") -> int:
        return 1024

    def config_name(self, prediction_type: str, tiny: bool, variant: str = "4b") -> str:
        return "tiny-flux2-klein" if tiny else SIZES[variant or "4b"]

    def config_names(self) -> tuple[str, ...]:
        return ("tiny-flux2-klein", *SIZES.values())

    def variant_of_config(self, config_name: str) -> str:
        return VARIANT_OF.get(config_name, "4b")

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        shared_checks(self, cfg)

    # --- detection ------------------------------------------------------------------------------------
    def claims_checkpoint(self, shapes: dict[str, tuple]) -> bool:
        from trainer.models import dit_detect

        kind = dit_detect.identify(shapes)
        return kind is not None and kind.family == "flux2" and kind.variant != "flux2-dev"

    def refuse_unclaimed(self, path: Path, shapes: dict[str, tuple]) -> None:
        from trainer.models import dit_detect

        kind = dit_detect.identify(shapes)
        hint = "train on FLUX.2 klein: flux-2-klein-base-4b.safetensors or -9b"
        if kind is not None and kind.variant == "flux2-dev":
            raise ModelFileError(f"{path} is FLUX.2 [dev] (32 B), which LoRA Studio does not train", hint)
        if any("double_stream_modulation" in k for k in shapes):
            raise ModelFileError(f"{path} is a FLUX.2 model of a kind LoRA Studio does not train", hint)

    def describe_checkpoint(self, info, shapes: dict[str, tuple], metadata: dict) -> None:
        from trainer.families.companions import companions
        from trainer.families.klein_files import roles
        from trainer.models import dit_detect

        kind = dit_detect.identify(shapes)
        info.size = "full" if kind.variant in SIZES.values() else "tiny"
        info.variant = VARIANT_OF.get(kind.variant, "4b")
        info.prediction_type, info.prediction_source = "flow", "FLUX.2 klein (rectified flow)"
        info.extra["distilled"] = distilled(info.path)
        if info.path.is_file():
            found, missing = companions(info.path, {}, roles(info.variant))
            info.extra.update(files={role: str(p) for role, p in found.items()}, missing_files=missing)

    def claims_folder(self, index: dict, denoiser_config: dict) -> bool:
        return index.get("_class_name") == "Flux2KleinPipeline"

    def describe_folder(self, info, denoiser_config: dict, scheduler_config: dict) -> None:
        heads = denoiser_config.get("num_attention_heads", 24)
        info.size = "full" if heads >= 8 else "tiny"
        info.variant = "9b" if heads == 32 else "4b"  # the shipped configs: 4B 24 heads, 9B 32
        info.prediction_type, info.prediction_source = "flow", "FLUX.2 klein (rectified flow)"
        info.extra["distilled"] = distilled(info.path)

    def load_folder(self, path: Path, info, precision, device, files: dict | None = None) -> dict:
        from trainer.families.klein_files import build_one, keep_latent_stats
        from trainer.families.qwen_files import load_folder

        return load_folder(path, precision, device, build_one, self.label, vae_hook=keep_latent_stats)

    def claims_lora(self, keys: list[str], metadata: dict) -> bool:
        if metadata.get("lora_studio_base_config") in self.config_names():
            return True
        if "flux-2-klein" in metadata.get("modelspec.architecture", ""):
            return True
        return any(k.startswith(("diffusion_model.double_blocks.", "diffusion_model.single_blocks.")) for k in keys) \
            and any("double_stream_modulation" in k or ".img_mlp." in k for k in keys)

    # --- loading --------------------------------------------------------------------------------------
    def tiny_components(self, seed: int = 0) -> dict:
        import torch

        from trainer.families.klein_files import build_components, keep_latent_stats

        torch.manual_seed(seed)
        parts = build_components(self.config_folder("tiny-flux2-klein"))
        # a built VAE's batch-norm statistics are 0 and 1: give them a real model's spread, so tests see them
        parts["vae"].bn.running_mean.uniform_(-0.2, 0.2)
        parts["vae"].bn.running_var.uniform_(0.5, 2.0)
        keep_latent_stats(parts["vae"])
        return parts

    def meta_components(self, configs: Path) -> dict:
        import torch

        from trainer.families.klein_files import build_components

        with torch.device("meta"):
            parts = build_components(configs)
        parts.pop("scheduler")  # modules only: plan counts their parameters
        return parts

    def load_single_file(self, path: Path, info, precision, device, files: dict | None = None) -> dict:
        from trainer.families.klein_files import load_files

        return load_files(self, path, info, precision, device, files or {})

    # --- training -------------------------------------------------------------------------------------
    def encode_latents(self, vae, latents):
        from trainer.families.klein_files import to_model_latents

        return to_model_latents(vae, latents)

    def decode_latents(self, vae, latents):
        from trainer.families.klein_files import to_vae_latents

        return to_vae_latents(vae, latents)

    def conditioning(self, model, hidden, pooled, batch, latents, dtype) -> dict:
        from trainer.families.klein_files import text_ids

        hidden = hidden.to(latents.device, dtype)
        return {"encoder_hidden_states": hidden, "txt_ids": text_ids(hidden)}

    def predict(self, denoiser, noisy, timesteps, conditioning: dict):
        from trainer.families.klein_files import pack, unpack

        tokens, image_ids = pack(noisy)
        out = denoiser(hidden_states=tokens, timestep=timesteps.to(noisy.dtype), img_ids=image_ids, guidance=None,
                       return_dict=False, **conditioning)[0]
        return unpack(out, noisy.shape)

    # --- previews and try-it --------------------------------------------------------------------------
    def preview_scheduler(self, sampler: str, training_scheduler):
        return training_scheduler

    def preview_pipeline(self, model, scheduler):
        from trainer.families.klein_files import preview_pipeline

        return preview_pipeline(model, scheduler)

    def prompt_kwargs(self, model, prompt: str, negative: str, device, clip_skip: int, max_tokens: int) -> dict:
        hidden, _ = self.text.encode(model, [prompt, negative], device, None, clip_skip, max_tokens)
        return {"prompt_embeds": hidden[:1], "negative_prompt_embeds": hidden[1:], "max_sequence_length": max_tokens}

    def sampling_kwargs(self, model, steps: int, guidance: float, rescale: float) -> dict:
        return {"num_inference_steps": steps, "guidance_scale": guidance}

    def preview_latents(self, pipe, latents, width: int, height: int):
        """The pipeline hands back VAE latents; decode_latents expects the denoiser's."""
        return self.encode_latents(pipe.vae, latents)

    # --- export ---------------------------------------------------------------------------------------
    def kohya_name(self, component: str, module: str, denoiser_config: dict | None) -> str:
        from trainer.models import flux2_layout

        if component != "unet":
            raise ValueError(f"{component} is never trained for {self.label}")
        link, _ = flux2_layout.layout(*flux2_layout.depth([module], contiguous=False)).by_part.get(module, (None, 0))
        if link is None or not link.linear:
            raise ValueError(f"{module} is not a FLUX.2 linear layer")
        return flux2_layout.LORA_PREFIX + link.original

    def export_kohya(self, adapters: dict, denoiser_config: dict, scales: dict, dtype) -> dict:
        from trainer.families.klein_lora import export

        return export(adapters, denoiser_config, scales, dtype)

    def kohya_modules(self, components: dict) -> dict:
        from trainer.families.klein_lora import targets

        return targets(components)

    def ui_verdicts(self, shapes: dict[str, tuple], metadata: dict) -> dict[str, tuple[str, str]]:
        from trainer.families.klein_lora import ui_verdicts

        return ui_verdicts(shapes)

    def diffusers_pieces(self, target, down, up, denoiser_config: dict) -> list:
        from trainer.families.klein_lora import diffusers_pieces

        return diffusers_pieces(target, down, up)

    def peft_components(self, denoiser_config: dict, path: Path, tensors: dict, metadata: dict) -> dict:
        """Any klein LoRA file as PEFT state; a 9B LoRA on a 4B base (or the reverse) is refused by name."""
        from trainer.families.klein_lora import peft_state
        from trainer.shared.errors import UserError

        width = denoiser_config["num_attention_heads"] * denoiser_config["attention_head_dim"]
        base = {3072: "4b", 4096: "9b"}.get(width)
        made = next((v for v in SIZES if v in metadata.get("modelspec.architecture", "")), None)
        if base and made and base != made:
            raise UserError(f"{path.name} is a LoRA for FLUX.2 klein {made.upper()}, the base model is klein "
                            f"{base.upper()}", "4B and 9B LoRAs are not interchangeable: choose the matching pair")
        return {"transformer": peft_state(tensors)}

    def diffusers_prefix(self, component: str) -> str:
        return "transformer"

    def metadata(self, prediction_type: str, variant: str = "4b") -> dict[str, str]:
        variant = variant or "4b"
        return {"ss_base_model_version": f"flux2_klein_{variant}", "ss_v2": "False",
                "modelspec.architecture": f"flux-2-klein-{variant}",
                "lora_studio_note": f"for FLUX.2 klein {variant.upper()} only: 4B and 9B LoRAs are not interchangeable"}

    def config_from_metadata(self, metadata: dict) -> str:
        return SIZES["9b" if "9b" in metadata.get("modelspec.architecture", "") else "4b"]

    def original_layout(self, components: dict) -> dict:
        from trainer.models.flux2_layout import to_original

        return to_original(components["unet"].state_dict())

    def original_key(self, component: str, module: str, denoiser_config: dict) -> tuple[str, object]:
        from trainer.families.klein_lora import merge_slot

        return merge_slot(module, denoiser_config)

    def single_files(self, components: dict, variant: str = "4b") -> dict[str, dict]:
        from trainer.families.klein_files import single_files

        return single_files(components, variant)


FLUX2_KLEIN = register(Flux2Klein())
