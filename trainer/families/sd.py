"""Stable Diffusion 1.x and 2.x: one UNet, one CLIP text encoder (SD1: OpenAI CLIP ViT-L/14, SD2: OpenCLIP
ViT-H, conditioned on its penultimate layer), DDPM with epsilon (SD1, SD2 512-base) or v-prediction (SD2
768-v)."""

from __future__ import annotations

from trainer.families.base import PlanFigures
from trainer.families.clip_text import ClipText
from trainer.families.ldm_layout import LdmLayout
from trainer.families.registry import register
from trainer.families.unet import UNetFamily, lora_version

GB = 1e9
V_HINT = ("SD2 default: most SD2.x checkpoints are 768-v; set model.prediction_type = \"epsilon\" "
          "for 512-base models")


class StableDiffusion1(UNetFamily):
    id, label = "sd1", "SD 1.x"
    demo, preset_prefix, a1111_version = "demo:sd15", "sd15", "SD1"
    invokeai_base = "sd-1"
    full_config, tiny_config = "sd15", "tiny-sd15"
    te_marker, cross_attention_width = "cond_stage_model.transformer.", 768
    ldm = LdmLayout(clip_prefix="cond_stage_model.transformer.", openclip_prefix=None)
    text = ClipText()
    pipeline_class = "StableDiffusionPipeline"
    plan = PlanFigures(activation_resolution=512, activation_bytes=3.0 * GB, denoiser_params=859_520_964,
                       vae_encode_bytes=1.2 * GB)

    def claims_folder(self, index: dict, denoiser_config: dict) -> bool:
        xl = "XL" in index.get("_class_name", "") or "addition_embed_type" in denoiser_config
        width = denoiser_config.get("cross_attention_dim")
        return not xl and width in (self.cross_attention_width, self.tiny_width())

    def tiny_width(self) -> int:
        """The cross-attention width of the tiny model (a tiny diffusers folder is told apart by it)."""
        from trainer.families.unet import read_json

        return read_json(self.config_folder(self.tiny_config) / "unet" / "config.json")["cross_attention_dim"]

    def claims_lora(self, keys: list[str], metadata: dict) -> bool:
        if metadata.get("lora_studio_base_config") in self.config_names():
            return True
        version = lora_version(metadata)
        return "sd_v1" in version or "stable-diffusion-v1" in version

    def preview_pipeline(self, model, scheduler):
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0], unet=model.unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    def metadata(self, prediction_type: str, variant: str = "") -> dict[str, str]:
        return {"ss_base_model_version": "sd_v1", "ss_v2": "False",
                "modelspec.architecture": "stable-diffusion-v1"}


class StableDiffusion2(StableDiffusion1):
    id, label = "sd2", "SD 2.x"
    demo, a1111_version = "demo:sd2", "SD2"
    invokeai_base = "sd-2"
    view_seconds = 2.0   # SD1.5's UNet at 768 px (the 768-v default): 2.25x the pixels
    full_config, tiny_config = "sd2", "tiny-sd2"
    te_marker, cross_attention_width = "cond_stage_model.model.", 1024
    ldm = LdmLayout(clip_prefix=None, openclip_prefix="cond_stage_model.model.", openclip_extra_layer=True)
    plan = PlanFigures(activation_resolution=768, activation_bytes=5.5 * GB, denoiser_params=865_910_724,
                       vae_encode_bytes=2.7 * GB)

    def native_resolution(self, prediction_type: str = "") -> int:
        """The 512-base predicts epsilon; the 768-v model (and SD2's default) is trained at 768."""
        return 512 if prediction_type == "epsilon" else 768

    def default_prediction(self) -> tuple[str, str]:
        return "v_prediction", V_HINT

    def config_name(self, prediction_type: str, tiny: bool, variant: str = "") -> str:
        if tiny:
            return self.tiny_config
        return "sd2-768v" if prediction_type == "v_prediction" else "sd2"

    def config_names(self) -> tuple[str, ...]:
        return ("sd2", "sd2-768v", self.tiny_config)

    def prediction_of_config(self, config_name: str) -> str:
        return "v_prediction" if config_name == "sd2-768v" else "epsilon"

    def claims_lora(self, keys: list[str], metadata: dict) -> bool:
        if metadata.get("lora_studio_base_config") in self.config_names():
            return True
        version = lora_version(metadata)
        return "sd_v2" in version or "stable-diffusion-v2" in version or metadata.get("ss_v2") == "True"

    def config_from_metadata(self, metadata: dict) -> str:
        return "sd2-768v" if "768" in lora_version(metadata) else "sd2"

    def metadata(self, prediction_type: str, variant: str = "") -> dict[str, str]:
        v = prediction_type == "v_prediction"
        return {"ss_base_model_version": "sd_v2_768_v" if v else "sd_v2", "ss_v2": "True",
                "modelspec.architecture": "stable-diffusion-v2-768-v" if v else "stable-diffusion-v2-512"}


SD1 = register(StableDiffusion1())
SD2 = register(StableDiffusion2())
