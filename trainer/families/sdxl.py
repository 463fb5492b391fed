"""SDXL base: a larger UNet conditioned on two CLIP encoders (ViT-L and OpenCLIP ViT-bigG, both at their
penultimate layer), the second's pooled projection, and the image's size and crop (micro-conditioning)."""

from __future__ import annotations

from trainer.families.base import PlanFigures
from trainer.families.clip_text import ClipText
from trainer.families.ldm_layout import LdmLayout
from trainer.families.registry import register
from trainer.families.unet import UNetFamily, lora_version

GB = 1e9


class StableDiffusionXL(UNetFamily):
    id, label = "sdxl", "SDXL"
    demo, preset_prefix, a1111_version, invokeai_base = "demo:sdxl", "sdxl", "SDXL", "sdxl"
    tier_prefix, smallest_tier, min_gpu_gb = "sdxl-", "8gb", 7.5  # no SDXL tier below 8 GB
    view_seconds = 6.0   # 1024 px and a 3x larger UNet: ~5-7x SD1.5's time per image (commonly reported it/s)
    full_config, tiny_config, resolution = "sdxl", "tiny-sdxl", 1024
    text_encoders = ("text_encoder", "text_encoder_2")
    te_marker, cross_attention_width = "conditioner.embedders.1.", 2048
    ldm = LdmLayout(clip_prefix="conditioner.embedders.0.transformer.",
                    openclip_prefix="conditioner.embedders.1.model.", openclip_component="text_encoder_2")
    text = ClipText(penultimate=True, pooled=True)
    pipeline_class = "StableDiffusionXLPipeline"
    te_prefixes = {"text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}
    plan = PlanFigures(activation_resolution=1024, activation_bytes=11.0 * GB, denoiser_params=2_567_463_684,
                       vae_encode_bytes=4.8 * GB)

    def claims_folder(self, index: dict, denoiser_config: dict) -> bool:
        return "XL" in index.get("_class_name", "") or denoiser_config.get("addition_embed_type") == "text_time"

    def claims_lora(self, keys: list[str], metadata: dict) -> bool:
        if metadata.get("lora_studio_base_config") in self.config_names():
            return True
        version = lora_version(metadata)
        if "sdxl" in version or "stable-diffusion-xl" in version:
            return True
        # FLUX.1 files name CLIP-L/T5 lora_te1_/lora_te2_ (text_encoder_2.) too; their transformer tells them apart
        return any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.", "te2.")) for k in keys) and \
            not any(k.startswith(("lora_unet_double_blocks_", "lora_unet_single_blocks_", "transformer.")) for k in keys)

    def conditioning(self, model, hidden, pooled, batch, latents, dtype) -> dict:
        """SDXL's micro-conditioning: (orig_h, orig_w, crop_top, crop_left, target_h, target_w) per image."""
        import torch

        target = (latents.shape[-2] * self.latent_factor, latents.shape[-1] * self.latent_factor)  # the bucket
        rows = [[*orig, *crop, *target] for orig, crop in zip(batch.original_sizes, batch.crops)]
        time_ids = torch.tensor(rows, device=latents.device, dtype=latents.dtype)
        return {"encoder_hidden_states": hidden.to(dtype),
                "added_cond_kwargs": {"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(dtype)}}

    def preview_pipeline(self, model, scheduler):
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(
            vae=model.vae, text_encoder=model.text_encoders[0], text_encoder_2=model.text_encoders[1],
            tokenizer=model.tokenizers[0], tokenizer_2=model.tokenizers[1], unet=model.unet,
            scheduler=scheduler, force_zeros_for_empty_prompt=True)

    def prompt_kwargs(self, model, prompt: str, negative: str, device, clip_skip: int, max_tokens: int) -> dict:
        """With the pooled embeddings; SDXL's empty negative is zeros (force_zeros_for_empty_prompt)."""
        hidden, pooled = self.text.encode(model, [prompt], device, None, clip_skip, max_tokens)
        if not negative:
            return {"prompt_embeds": hidden, "pooled_prompt_embeds": pooled}
        neg_hidden, neg_pooled = self.text.encode(model, [negative], device, None, clip_skip, max_tokens)
        empty, _ = self.text.encode(model, [""], device, None, clip_skip)
        both = self.text.pad([hidden[0], neg_hidden[0]], empty[0])
        return {"prompt_embeds": both[:1], "negative_prompt_embeds": both[1:], "pooled_prompt_embeds": pooled,
                "negative_pooled_prompt_embeds": neg_pooled}

    def unet_module_path(self, module: str, unet_config: dict | None) -> str:
        """kohya writes SDXL LoRAs with the original SGM names, and every UI maps those for SDXL."""
        from trainer.families.ldm_layout import sgm_unet_name

        return sgm_unet_name(module, unet_config)

    def metadata(self, prediction_type: str, variant: str = "") -> dict[str, str]:
        return {"ss_base_model_version": "sdxl_base_v1-0", "ss_v2": "False",
                "modelspec.architecture": "stable-diffusion-xl-v1-base"}


SDXL = register(StableDiffusionXL())
