"""What the Stable Diffusion families (SD1.x, SD2.x, SDXL) share: a diffusers UNet2DConditionModel denoiser,
CLIP text encoders, the LDM single-file layout, DDPM, kohya names. trainer/families/sd.py and sdxl.py set
what differs between them.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.families.base import Family, LoraTargets, TokenFacts
from trainer.families.ddpm import Ddpm
from trainer.shared.errors import ModelFileError

UNET_PREFIX = "model.diffusion_model."
_ATTENTION = r".*\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)"
_FF = r".*\.ff\.net\.(0\.proj|2)|.*attentions\.\d+\.(proj_in|proj_out)"
_CONV = r".*resnets\.\d+\.(conv1|conv2|conv_shortcut|time_emb_proj)|.*(downsamplers|upsamplers)\.0\.conv"
# Target sets by diffusers' UNet module names:
# - attention:     self- and cross-attention projections (to_q, to_k, to_v, to_out.0)
# - attention+ff:  + the transformer blocks' feed-forward (ff.net) and proj_in/proj_out: kohya's default set
# - full:          + resnet convolutions, time-embedding projections, down/up-sampler convolutions (LoCon)
# Text encoders (when trained): q/k/v/out_proj and the MLP's fc1/fc2 in every layer.
# kohya's conv_dim/conv_alpha apply to the 3x3 convolutions only; 1x1 ones (conv_shortcut) take the linear rank.
UNET_LORA = LoraTargets(
    denoiser={"attention": f"^({_ATTENTION})$", "attention+ff": f"^({_ATTENTION}|{_FF})$",
              "full": f"^({_ATTENTION}|{_FF}|{_CONV})$"},
    text_encoder=r"^.*\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))$",
    conv=r".*resnets\.\d+\.(conv1|conv2)|.*(downsamplers|upsamplers)\.0\.conv",
    blocks={"down": r"down_blocks\.\d+\.", "mid": r"mid_block\.", "up": r"up_blocks\.\d+\."})
CLIP_TOKENS = TokenFacts(chunk=75, default=225, maximum=225, tokenizer="tokenizer")
DDPM = Ddpm()


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class UNetFamily(Family):
    denoiser = "unet"
    tokens = CLIP_TOKENS
    lora = UNET_LORA
    objective = DDPM
    ldm = None                         # trainer.families.ldm_layout.LdmLayout: its single-file text encoders
    cross_attention_width = 0          # the UNet's context width tells the families apart in a bare UNet
    full_config, tiny_config = "", ""  # assets/configs folders of the real model and of the tiny one
    resolution = 512                   # the native resolution

    def native_resolution(self, prediction_type: str = "") -> int:
        return self.resolution

    def config_name(self, prediction_type: str, tiny: bool, variant: str = "") -> str:
        return self.tiny_config if tiny else self.full_config

    def config_names(self) -> tuple[str, ...]:
        return (self.full_config, self.tiny_config)

    # --- detection ------------------------------------------------------------------------------------
    te_marker = ""                     # the key prefix of this family's text encoder in a single file

    def claims_checkpoint(self, shapes: dict[str, tuple]) -> bool:
        if not any(k.startswith(UNET_PREFIX) for k in shapes):
            return False
        if any(k.startswith(self.te_marker) for k in shapes):
            return True
        bare = not any(k.startswith(("cond_stage_model.", "conditioner.")) for k in shapes)
        return bare and _context_width(shapes) == self.cross_attention_width

    def describe_checkpoint(self, info, shapes: dict[str, tuple], metadata: dict) -> None:
        conv_in = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight", (320, 4))
        info.size = "tiny" if conv_in[0] < 128 else "full"
        if conv_in[1] != 4:
            info.kind = "inpainting"
            info.extra["unet_in_channels"] = conv_in[1]
        info.prediction_type, info.prediction_source = self.prediction(shapes, metadata)

    def prediction(self, shapes: dict[str, tuple], metadata: dict) -> tuple[str, str]:
        declared = str(metadata.get("modelspec.prediction_type", "")).lower()
        if declared:
            pred = "v_prediction" if declared.startswith("v") else "epsilon"
            return pred, "metadata modelspec.prediction_type"
        if "v_pred" in shapes:
            return "v_prediction", "v_pred key in the checkpoint"
        return self.default_prediction()

    def default_prediction(self) -> tuple[str, str]:
        return "epsilon", f"{self.label} default"

    def refuse_unclaimed(self, path: Path, shapes: dict[str, tuple]) -> None:
        if not any(k.startswith(UNET_PREFIX) for k in shapes):
            return
        width = _context_width(shapes)
        if width == 1280:
            raise ModelFileError(f"{path} is an SDXL refiner", "LoRAs are trained on SDXL base: pick the base model")
        raise ModelFileError(f"{path} has a UNet of an unknown architecture (cross-attention width {width})",
                             "LoRA Studio trains the families listed by `lora-studio system`")

    def describe_folder(self, info, denoiser_config: dict, scheduler_config: dict) -> None:
        info.size = "tiny" if denoiser_config.get("block_out_channels", [320])[0] < 128 else "full"
        info.prediction_type = scheduler_config.get("prediction_type", "epsilon")
        info.prediction_source = "scheduler config"

    # --- loading --------------------------------------------------------------------------------------
    def tiny_components(self, seed: int = 0) -> dict:
        """Random-weight unet, vae, text encoder(s) and scheduler from assets/configs/tiny-*: the same block
        types, attention layout and conditioning as the real model with a few hundred times fewer channels."""
        import torch
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        folder = self.config_folder(self.tiny_config)
        torch.manual_seed(seed)
        parts = {"unet": UNet2DConditionModel.from_config(read_json(folder / "unet" / "config.json")),
                 "vae": AutoencoderKL.from_config(read_json(folder / "vae" / "config.json")),
                 "scheduler": DDPMScheduler.from_config(read_json(folder / "scheduler" / "scheduler_config.json"))}
        parts.update(self._text_encoders(folder))
        return parts

    def _text_encoders(self, folder: Path) -> dict:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        out = {}
        for name in self.text_encoders:
            cls = CLIPTextModelWithProjection if name == "text_encoder_2" else CLIPTextModel
            out[name] = cls(CLIPTextConfig.from_dict(read_json(folder / name / "config.json")))
        return out

    def meta_components(self, configs: Path) -> dict:
        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel

        with torch.device("meta"):
            parts = {"unet": UNet2DConditionModel.from_config(read_json(configs / "unet" / "config.json")),
                     "vae": AutoencoderKL.from_config(read_json(configs / "vae" / "config.json"))}
            parts.update(self._text_encoders(configs))
        return parts

    def load_single_file(self, path: Path, info, precision, device, files: dict | None = None) -> dict:
        from trainer.models.single_file import load_single_file

        return load_single_file(path, info.config_folder(), self.ldm.text_encoders(), precision,
                                device, self.tokenizers())

    def load_folder(self, path: Path, info, precision, device, files: dict | None = None) -> dict:
        from trainer.models.folder import load_diffusers_folder

        parts = load_diffusers_folder(path, self.text_encoders, precision, device)
        return {**self.tokenizers(), **parts}  # the folder's own tokenizers where it has them

    def load_transient_bytes(self, components: dict) -> int:
        """OpenCLIP files fuse q/k/v: those tensors are split for real (the fp16 split copies)."""
        if not self.ldm.openclip_prefix or self.ldm.openclip_component not in components:
            return 0
        config = components[self.ldm.openclip_component].config
        return 2 * config.num_hidden_layers * 3 * config.hidden_size ** 2

    def caption_tokenizer(self):
        from trainer.models.assets import load_tokenizer

        return load_tokenizer()

    def tokenizers(self) -> dict:
        """The bundled tokenizers for a single file, which carries none."""
        from trainer.models.assets import load_tokenizer

        return {("tokenizer" if i == 0 else f"tokenizer_{i + 1}"): load_tokenizer(second=i > 0)
                for i in range(len(self.text_encoders))}

    # --- training -------------------------------------------------------------------------------------
    def conditioning(self, model, hidden, pooled, batch, latents, dtype) -> dict:
        return {"encoder_hidden_states": hidden.to(dtype)}

    def predict(self, denoiser, noisy, timesteps, conditioning: dict):
        return denoiser(noisy, timesteps, **conditioning).sample

    # --- previews -------------------------------------------------------------------------------------
    def prompt_kwargs(self, model, prompt: str, negative: str, device, clip_skip: int, max_tokens: int) -> dict:
        """The pipeline's conditioning, encoded as in training (diffusers' own clip_skip path reaches for
        `text_encoder.text_model`, which transformers 5 removed; its prompt encoder also stops at 77 tokens).
        Prompt and negative are padded to the same number of 75-token chunks, as the pipeline requires."""
        text = self.text
        hidden, _ = text.encode(model, [prompt], device, None, clip_skip, max_tokens)
        neg_hidden, _ = text.encode(model, [negative], device, None, clip_skip, max_tokens)
        empty, _ = text.encode(model, [""], device, None, clip_skip)
        both = text.pad([hidden[0], neg_hidden[0]], empty[0])
        return {"prompt_embeds": both[:1], "negative_prompt_embeds": both[1:]}

    # --- export ---------------------------------------------------------------------------------------
    te_prefixes: dict[str, str] = {"text_encoder": "lora_te"}

    def unet_module_path(self, module: str, unet_config: dict | None) -> str:
        return module

    def kohya_name(self, component: str, module: str, denoiser_config: dict | None) -> str:
        if component == "unet":
            return "lora_unet_" + self.unet_module_path(module, denoiser_config).replace(".", "_")
        if not module.startswith("text_model."):
            module = "text_model." + module  # transformers 5 dropped the `text_model` wrapper; the UIs expect it
        return f"{self.te_prefixes[component]}_" + module.replace(".", "_")

    def original_layout(self, components: dict) -> dict:
        from trainer.families.ldm_layout import to_original_state_dict

        return to_original_state_dict(components, self.ldm)

    def original_key(self, component: str, module: str, denoiser_config: dict) -> tuple[str, int | None]:
        from trainer.families.ldm_layout import original_key

        return original_key(self.ldm, component, module, denoiser_config)


def _context_width(shapes: dict[str, tuple]) -> int | None:
    return next((s[1] for k, s in shapes.items() if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")),
                None)


def lora_version(metadata: dict) -> str:
    """What a LoRA's metadata says about its base: kohya's version key and Stability's architecture."""
    return metadata.get("ss_base_model_version", "") + " " + metadata.get("modelspec.architecture", "")
