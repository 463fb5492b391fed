"""FLUX.2 klein's files: the transformer in BFL's names (trainer/models/flux2_layout.py), Qwen3-4B (4B) or
Qwen3-8B (9B) and `flux2-vae.safetensors`, found beside the transformer or in ComfyUI's folders
(trainer/families/companions.py); loaded through the streaming loader, the transformer deferred so Qwen3
encodes every caption and leaves memory first. Also its latents (2x2-patchified 32-channel VAE latents,
normalised by the VAE's batch-norm statistics) and packing, and its LoRA layout.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.families.companions import Role, find_files
from trainer.families.qwen_files import QWEN_PREFIX, build_scheduler, check_text_encoder, json_file, load_qwen
from trainer.models.qwen_prompts import KLEIN

QWEN = {"4b": ("qwen3-4b", ("qwen_3_4b.safetensors", "qwen_3_4b_fp8_mixed.safetensors", "qwen3_4b.safetensors")),
        "9b": ("qwen3-8b", ("qwen_3_8b.safetensors", "qwen_3_8b_fp8_mixed.safetensors", "qwen3_8b.safetensors"))}


def roles(variant: str) -> dict[str, Role]:
    return {"text_encoder": Role("model.text_encoder", QWEN[variant][1], ("text_encoders", "clip")),
            "vae": Role("model.vae", ("flux2-vae.safetensors", "flux2_vae.safetensors", "ae.safetensors"), ("vae",))}


def build_one(configs: Path, part: str):
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    from trainer.families.qwen_text import qwen_text_encoder

    if part == "unet":
        return Flux2Transformer2DModel.from_config(json_file(configs / "transformer" / "config.json"))
    if part == "vae":
        return AutoencoderKLFlux2.from_config(json_file(configs / "vae" / "config.json"))
    return qwen_text_encoder(json_file(configs / "text_encoder" / "config.json"), KLEIN)


def build_components(configs: Path) -> dict:
    parts = {name: build_one(configs, name) for name in ("unet", "vae", "text_encoder")}
    return {**parts, "scheduler": build_scheduler(configs)}


def load_files(family, path: Path, info, precision, device, given: dict) -> dict:
    """Qwen3 and the VAE now; the transformer as a function the loader calls once the captions are encoded."""
    from trainer.models.assets import load_qwen3_tokenizer
    from trainer.models.streaming import TensorFile

    variant = info.variant or "4b"
    files = find_files(path, given, roles(variant), family.label + " " + variant.upper())
    check_text_encoder(files["text_encoder"], QWEN[variant][0], f"{family.label} {variant.upper()}")
    configs = info.config_folder()
    parts = {"vae": keep_latent_stats(load_vae(configs, files["vae"], precision).to(device)),
             "text_encoder": load_qwen(configs, files["text_encoder"], precision, build_one).to(device),
             "scheduler": build_scheduler(configs), "tokenizer": load_qwen3_tokenizer()}
    parts["unet"] = lambda: load_transformer(configs, TensorFile.open(path), path, precision)
    return parts


def load_transformer(configs: Path, source, path: Path, precision):
    from trainer.models import flux2_layout
    from trainer.models.streaming import load_component, rows_only

    convert = rows_only(lambda state: flux2_layout.to_diffusers(dict(state)))
    return load_component(lambda: build_one(configs, "unet"), source, source.keys(), convert, precision.dtype_for,
                          f"FLUX.2 klein transformer ({path.name})")


def load_vae(configs: Path, file: Path, precision):
    from trainer.models import flux2_layout
    from trainer.models.streaming import TensorFile, load_component

    source = TensorFile.open(file)
    return load_component(lambda: build_one(configs, "vae"), source, source.keys(),
                          lambda state: flux2_layout.vae_to_diffusers(dict(state)), precision.vae_dtype_for,
                          f"FLUX.2 VAE ({file.name})")


def single_files(components: dict, variant: str = "4b") -> dict[str, dict]:
    """The three files ComfyUI users keep (the transformer first)."""
    from trainer.models import flux2_layout

    qwen = {QWEN_PREFIX + k: v for k, v in components["text_encoder"].state_dict().items()}
    vae = {k: v.clone().contiguous() for k, v in flux2_layout.vae_to_original(components["vae"].state_dict()).items()}
    return {f"flux-2-klein-base-{variant}.safetensors": flux2_layout.to_original(components["unet"].state_dict()),
            f"qwen_3_{'8b' if variant == '9b' else '4b'}.safetensors": qwen, "flux2-vae.safetensors": vae}


# ---- latents -------------------------------------------------------------------------------------------
def keep_latent_stats(vae):
    """Copy the batch-norm statistics out of the VAE's buffers: training needs them after the VAE has left
    memory (trainer/run/offload.py drops it once the latents are cached)."""
    vae.latent_stats = (vae.bn.running_mean.detach().float().clone(),
                        torch.sqrt(vae.bn.running_var.detach().float() + vae.config.batch_norm_eps))
    return vae


def _bn(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not hasattr(vae, "latent_stats"):
        keep_latent_stats(vae)
    mean, std = vae.latent_stats
    return mean.view(1, -1, 1, 1).to(like.device, like.dtype), std.view(1, -1, 1, 1).to(like.device, like.dtype)


def to_model_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """(B, 32, H, W) VAE latents -> (B, 128, H/2, W/2): 2x2 patches, normalised (Flux2KleinPipeline's order)."""
    b, c, h, w = latents.shape
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
    mean, std = _bn(vae, patches)
    return (patches - mean) / std


def to_vae_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    mean, std = _bn(vae, latents)
    latents = latents * std + mean
    b, c, h, w = latents.shape
    return latents.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)


def pack(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> (B, H·W, C) tokens and their (t, h, w, l) position ids, as Flux2KleinPipeline packs."""
    b, c, h, w = latents.shape
    ids = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))
    return latents.reshape(b, c, h * w).permute(0, 2, 1), ids.unsqueeze(0).expand(b, -1, -1).to(latents.device)


def unpack(tokens: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    b, c, h, w = shape
    return tokens.permute(0, 2, 1).reshape(b, c, h, w)


def text_ids(hidden: torch.Tensor) -> torch.Tensor:
    b, length, _ = hidden.shape
    ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(length))
    return ids.unsqueeze(0).expand(b, -1, -1).to(hidden.device)


_PREVIEW = {}


def preview_pipeline(model, scheduler):
    """Flux2KleinPipeline around the modules being trained, taking the prompt first and a negative prompt, as
    every other pipeline does (FLUX.2's takes reference images first and always "" as the negative). A
    released Qwen3 is left out (previews pass the encodings)."""
    from trainer.models.load import released

    if "class" not in _PREVIEW:
        from diffusers import Flux2KleinPipeline

        class Pipeline(Flux2KleinPipeline):
            def __call__(self, prompt=None, negative_prompt=None, **kwargs):
                if negative_prompt and kwargs.get("negative_prompt_embeds") is None:
                    kwargs["negative_prompt_embeds"], _ = self.encode_prompt(
                        negative_prompt, max_sequence_length=kwargs.get("max_sequence_length", 512))
                return super().__call__(prompt=prompt, **kwargs)

        _PREVIEW["class"] = Pipeline
    encoder = model.text_encoders[0]
    return _PREVIEW["class"](scheduler=scheduler, vae=model.vae, text_encoder=None if released(encoder) else encoder,
                             tokenizer=model.tokenizers[0], transformer=model.unet)
