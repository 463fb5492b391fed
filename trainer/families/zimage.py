"""Z-Image (Tongyi-MAI, 6 B, Apache-2.0): a single-stream rectified-flow DiT on FLUX.1's 16-channel AE latents,
conditioned on Qwen3-4B's second-to-last hidden state of the chat-formatted caption (padding dropped).

Users keep three files, as ComfyUI ships them: `z_image_bf16.safetensors` (Base; Turbo is the same layout,
distilled), `qwen_3_4b.safetensors` and `ae.safetensors` (trainer/families/zimage_files.py finds and loads
them). Its time runs the other way: the model sees (1000 − t)/1000 for the noise level t and predicts the
negated velocity (diffusers' ZImagePipeline), with a static shift of 3.0. LoRAs export under
`diffusion_model.` + diffusers module names with q/k/v split, the one layout all four UIs apply.
"""

from __future__ import annotations

from pathlib import Path

from trainer.families.base import Family, LoraTargets, PlanFigures, TokenFacts
from trainer.families.flow import FlowMatching, refuse_ddpm_options
from trainer.families.qwen_text import QwenText, QwenTokenizers, unpadded
from trainer.families.registry import register
from trainer.models.qwen_prompts import ZIMAGE
from trainer.shared.errors import ConfigError

GB = 1e9
_ATTN = r"layers\.\d+\.attention\.(to_q|to_k|to_v|to_out\.0)"
_FF = r"layers\.\d+\.feed_forward\.(w1|w2|w3)"
_MOD = r"layers\.\d+\.adaLN_modulation\.0"
_REFINERS = r"(noise_refiner|context_refiner)\.\d+\.(attention\.(to_q|to_k|to_v|to_out\.0)|feed_forward\.(w1|w2|w3))"
ZIMAGE_LORA = LoraTargets(
    denoiser={"attention": f"^({_ATTN})$", "attention+ff": f"^({_ATTN}|{_FF})$",
              "full": f"^({_ATTN}|{_FF}|{_MOD}|{_REFINERS})$"},
    text_encoder=r"^$",  # Qwen3 is never trained: no UI applies a LoRA to it
    blocks={"layers": r"layers\.\d+\.", "refiners": r"(noise|context)_refiner\.\d+\."},
    full_label="Modulation and refiners")


def shared_checks(family, cfg) -> None:
    """What Z-Image and FLUX.2 klein both refuse: DDPM options, LyCORIS (their files carry no alpha and
    no LyCORIS names the UIs read for them), a trained Qwen3, a prediction type."""
    refuse_ddpm_options(cfg.loss, family.label)
    if cfg.lora.algorithm != "lora" or cfg.lora.dora:
        raise ConfigError(f"config key 'lora.algorithm' is '{cfg.lora.algorithm}'{' with DoRA' * cfg.lora.dora}; "
                          f"{family.label} trains plain LoRA", "the layout every UI loads for it holds plain "
                          "LoRA only: set lora.algorithm = \"lora\"")
    if cfg.lora.train_text_encoder:
        raise ConfigError(f"config key 'lora.train_text_encoder' is true; {family.label}'s Qwen3 is not trained",
                          "no UI applies a LoRA to Qwen3: set lora.train_text_encoder = false")
    if cfg.model.prediction_type != "auto":
        raise ConfigError(f"config key 'model.prediction_type' is '{cfg.model.prediction_type}'; {family.label} "
                          "predicts the flow velocity", "set model.prediction_type = \"auto\"")


def variant_of(path) -> str:
    """Turbo (step-distilled) or Base: the files share one layout, so the name tells them apart."""
    return "turbo" if "turbo" in Path(str(path)).name.lower() else "base"


class ZImage(QwenTokenizers, Family):
    id, label = "zimage", "Z-Image"
    denoiser = "transformer"
    text_encoders = ("text_encoder",)
    demo, preset_prefix, a1111_version = "demo:zimage", "zimage", "Unknown"
    fixed_prediction = "flow"  # the demo (demo:…) has no file to say so
    tier_prefix, smallest_tier, min_gpu_gb = "zimage-", "8gb", 7.5
    view_seconds = 8.0  # 6 B at 1024 px: about half FLUX.1's 12 B per step
    latent_channels = 16
    tokens = TokenFacts(chunk=1, default=512, maximum=512, tokenizer="tokenizer_qwen3")
    lora = ZIMAGE_LORA
    swap_blocks = ("layers",)   # the 30 main layers; the 2 + 2 refiners stay
    # activations: scaled from FLUX.1's measured 9 GB by width x tokens (3840 vs 3072, 4096 + 512 tokens);
    # an estimate until measured on a GPU
    plan = PlanFigures(activation_resolution=1024, activation_bytes=8.0 * GB, denoiser_params=6_154_908_736,
                       vae_encode_bytes=5.0 * GB)
    text = QwenText(ZIMAGE)
    objective = FlowMatching(shift=3.0)  # ZImagePipeline's static shift; the reversed time is in `predict`
    pipeline_class = "ZImagePipeline"
    encode_before_denoiser = True
    fixed_prediction = "flow"
    diffusers_text_encoders = False
    distilled_variants = ("turbo",)  # told by the file name: the weights do not say (trainer.models.dit_detect)
    configs = {False: "zimage", True: "tiny-zimage"}

    def preview_defaults(self, variant: str = "", source: str = "") -> tuple[int, float]:
        # Turbo: 8 steps without CFG (Tongyi's); Base: real CFG, 28 steps for a preview
        return (8, 1.0) if variant == "turbo" else (28, 4.0)

    def native_resolution(self, prediction_type: str = "", variant: str = "") -> int:
        return 1024

    def config_name(self, prediction_type: str, tiny: bool, variant: str = "") -> str:
        return self.configs[tiny]

    def config_names(self) -> tuple[str, ...]:
        return tuple(self.configs.values())

    def variant_of_config(self, config_name: str) -> str:
        return "base"

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        shared_checks(self, cfg)
        if variant_of(cfg.model.path) == "turbo" and not cfg.model.training_adapter:
            raise ConfigError(f"{Path(cfg.model.path).name} is Z-Image Turbo, a step-distilled model: LoRAs trained "
                              "on it directly come out blurry; config key 'model.training_adapter' is empty",
                              "set model.training_adapter to a Z-Image Turbo training adapter (ai-toolkit users "
                              "find it on Hugging Face as ostris/zimage_turbo_training_adapter), or train on "
                              "Z-Image Base (z_image_bf16.safetensors), whose LoRAs apply to Turbo too")

    # --- detection ------------------------------------------------------------------------------------
    def claims_checkpoint(self, shapes: dict[str, tuple]) -> bool:
        from trainer.models import dit_detect

        kind = dit_detect.identify(shapes)
        return kind is not None and kind.family == "zimage"

    def describe_checkpoint(self, info, shapes: dict[str, tuple], metadata: dict) -> None:

        width = next((s[0] for k, s in shapes.items() if k.endswith("x_embedder.weight")), 3840)
        info.size = "tiny" if width < 1024 else "full"
        info.variant = variant_of(info.path)
        info.prediction_type, info.prediction_source = "flow", "Z-Image (rectified flow)"
        if info.path.is_file():
            from trainer.families.companions import companions
            from trainer.families.zimage_files import ROLES

            found, missing = companions(info.path, {}, ROLES)
            info.extra.update(files={role: str(p) for role, p in found.items()}, missing_files=missing)

    def claims_folder(self, index: dict, denoiser_config: dict) -> bool:
        return index.get("_class_name") == "ZImagePipeline"

    def describe_folder(self, info, denoiser_config: dict, scheduler_config: dict) -> None:
        info.size = "full" if denoiser_config.get("dim", 3840) >= 1024 else "tiny"
        info.variant = variant_of(info.path)
        info.prediction_type, info.prediction_source = "flow", "Z-Image (rectified flow)"

    def load_folder(self, path: Path, info, precision, device, files: dict | None = None) -> dict:
        from trainer.families.qwen_files import load_folder
        from trainer.families.zimage_files import build_one

        return load_folder(path, precision, device, build_one, self.label)

    def claims_lora(self, keys: list[str], metadata: dict) -> bool:
        if metadata.get("lora_studio_base_config") in self.config_names():
            return True
        if "z-image" in metadata.get("modelspec.architecture", "") or metadata.get("ss_base_model_version") == "zimage":
            return True
        return any(k.startswith(("diffusion_model.layers.", "transformer.layers.")) and
                   (".attention." in k or ".feed_forward." in k) for k in keys)

    # --- loading --------------------------------------------------------------------------------------
    def tiny_components(self, seed: int = 0) -> dict:
        import torch

        from trainer.families.zimage_files import build_components

        torch.manual_seed(seed)
        return build_components(self.config_folder(self.configs[True]))

    def meta_components(self, configs: Path) -> dict:
        import torch

        from trainer.families.zimage_files import build_components

        with torch.device("meta"):
            parts = build_components(configs)
        parts.pop("scheduler")  # modules only: plan counts their parameters
        return parts

    def load_single_file(self, path: Path, info, precision, device, files: dict | None = None) -> dict:
        from trainer.families.zimage_files import load_files

        return load_files(self, path, info, precision, device, files or {})

    # --- training -------------------------------------------------------------------------------------
    def conditioning(self, model, hidden, pooled, batch, latents, dtype) -> dict:
        return {"cap_feats": unpadded(hidden.to(latents.device, dtype), pooled)}

    def predict(self, denoiser, noisy, timesteps, conditioning: dict):
        """Z-Image sees 1 − σ as its time and predicts −velocity (ZImagePipeline): turned back here, so the
        flow-matching objective stays the one every flow family shares."""
        import torch

        frames = list(noisy.unsqueeze(2).unbind(0))  # (C, 1 frame, H, W) each
        out = denoiser(frames, (1 - timesteps).to(noisy.dtype), conditioning["cap_feats"], return_dict=False)[0]
        return -torch.stack([o.squeeze(1) for o in out]).to(noisy.dtype)

    # --- previews and try-it --------------------------------------------------------------------------
    def preview_scheduler(self, sampler: str, training_scheduler):
        return training_scheduler

    def preview_pipeline(self, model, scheduler):
        from trainer.families.zimage_files import preview_pipeline

        return preview_pipeline(self, model, scheduler)

    def prompt_kwargs(self, model, prompt: str, negative: str, device, clip_skip: int, max_tokens: int) -> dict:
        hidden, lengths = self.text.encode(model, [prompt, negative], device, None, clip_skip, max_tokens)
        embeds = unpadded(hidden, lengths)
        return {"prompt_embeds": embeds[:1], "negative_prompt_embeds": embeds[1:], "max_sequence_length": max_tokens}

    def sampling_kwargs(self, model, steps: int, guidance: float, rescale: float) -> dict:
        # ZImagePipeline runs CFG for any scale above 0: a scale of 1 (none, in every other pipeline) is 0 here
        return {"num_inference_steps": steps, "guidance_scale": guidance if guidance > 1 else 0.0}

    # --- export ---------------------------------------------------------------------------------------
    def kohya_name(self, component: str, module: str, denoiser_config: dict | None) -> str:
        from trainer.models.zimage_layout import lora_name

        if component != "unet":
            raise ValueError(f"{component} is never trained for {self.label}")
        return lora_name(module)

    def kohya_modules(self, components: dict) -> dict[str, tuple]:
        """The split layers our files hold, and the fused `attention.qkv` layers ComfyUI's own names use."""
        from trainer.models import zimage_layout

        out = super().kohya_modules(components)
        shapes = {k: tuple(v.shape) for k, v in components["unet"].state_dict().items()}
        for link in zimage_layout.layout(zimage_layout.depths(shapes)).links:
            if len(link.parts) > 1:
                rows = sum(shapes[f"{part}.weight"][0] for part in link.parts)
                out[zimage_layout.LORA_PREFIX + link.original] = \
                    ("unet", link.original, "Linear", (rows, shapes[f"{link.parts[0]}.weight"][1]))
        return out

    def diffusers_pieces(self, target, down, up, denoiser_config: dict) -> list:
        """A fused `attention.qkv` module becomes to_q/to_k/to_v (each the whole down, its third of the up)."""
        from trainer.models.zimage_layout import lora_read

        pieces = lora_read({f"{target.module}.lora_A.weight": down, f"{target.module}.lora_B.weight": up})
        if len(pieces) == 1:
            return [(module, piece_down, piece_up) for module, (piece_down, piece_up, _) in pieces.items()]
        # each piece its own copy of the shared down: a file cannot hold one tensor under three names
        return [(module, piece_down.clone(), piece_up) for module, (piece_down, piece_up, _) in pieces.items()]

    def ui_verdicts(self, shapes: dict[str, tuple], metadata: dict) -> dict[str, tuple[str, str]]:
        """Split q/k/v under `diffusion_model.` (ours) loads everywhere; InvokeAI and diffusers drop fused
        `attention.qkv` layers; kohya `lora_unet_` names are dropped by ComfyUI and Forge Neo and refused by
        InvokeAI (issue 28's measurements). Original Forge has no Z-Image."""
        from trainer.export.ui_rules import ABSENT, REFUSES, UNKNOWN, Verdicts, lora_modules
        from trainer.models.zimage_layout import LORA_PREFIX

        modules = list(lora_modules(shapes))
        verdicts = Verdicts(("comfyui", "forge-neo", "invokeai", "diffusers", "forge"))
        verdicts.add("forge", ABSENT, "has no Z-Image (Forge Neo has)")
        verdicts.drop(("invokeai", "diffusers"), [m for m in modules if m.endswith(".attention.qkv")],
                      "fused attention.qkv", LORA_PREFIX)
        kohya = [m for m in modules if m.startswith("lora_unet_")]
        verdicts.drop(("comfyui", "forge-neo"), kohya, "kohya lora_unet_ names")
        if kohya:
            verdicts.add("invokeai", REFUSES, "kohya lora_unet_ names")
            verdicts.add("diffusers", UNKNOWN, "kohya lora_unet_ names")
        other = [m for m in modules if not m.startswith((LORA_PREFIX, "lora_unet_"))]
        if other:
            verdicts.add(("comfyui", "forge-neo", "invokeai", "diffusers"), UNKNOWN,
                         f"{len(other)} layers without the diffusion_model. prefix, e.g. {other[0]}")
        return verdicts.result()

    def export_kohya(self, adapters: dict, denoiser_config: dict, scales: dict, dtype) -> dict:
        """`diffusion_model.` + diffusers names, lora_A/lora_B, alpha folded, no `.alpha`: every UI applies it."""
        from trainer.export.kohya import folded

        return folded(super().export_kohya(adapters, denoiser_config, scales, dtype))

    def peft_components(self, denoiser_config: dict, path: Path, tensors: dict, metadata: dict) -> dict:
        """Any Z-Image LoRA file (ours, fused `attention.qkv` names, kohya down/up) as PEFT state for `generate`."""
        from trainer.models.zimage_layout import lora_read

        state = {}
        for module, (down, up, scale) in lora_read(tensors).items():
            state[f"{module}.lora_A.weight"] = down
            state[f"{module}.lora_B.weight"] = up if scale == 1 else up * scale
        return {"transformer": state}

    def diffusers_prefix(self, component: str) -> str:
        return "transformer"

    def metadata(self, prediction_type: str, variant: str = "") -> dict[str, str]:
        return {"ss_base_model_version": "zimage", "ss_v2": "False", "modelspec.architecture": "z-image"}

    def config_from_metadata(self, metadata: dict) -> str:
        return self.configs[False]

    def original_layout(self, components: dict) -> dict:
        from trainer.models.zimage_layout import to_original

        return to_original(components["unet"].state_dict())

    def original_key(self, component: str, module: str, denoiser_config: dict) -> tuple[str, object]:
        """(original key, (first, end) rows of `attention.qkv` or None): q/k/v each fill their rows."""
        from trainer.models.fused_layout import linear_widths
        from trainer.models.zimage_layout import merge_slots
        from trainer.shared.errors import UserError

        try:
            slot = merge_slots([module], linear_widths("ZImageTransformer2DModel", denoiser_config))[module]
        except ValueError as exc:
            raise UserError(f"merge cannot bake {module} into a Z-Image file: {exc}",
                            "the LoRA is not for this model") from None
        rows = None if slot.rows is None else (slot.row_offset, slot.row_offset + slot.rows)
        return slot.kohya + ".weight", rows

    def single_files(self, components: dict, variant: str = "base") -> dict[str, dict]:
        from trainer.families.zimage_files import single_files

        return single_files(components, variant)


ZIMAGE_FAMILY = register(ZImage())
