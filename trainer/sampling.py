"""Preview images during training: fixed prompts and seeds, an A1111-like sampler, PNGs with their settings.

The pipeline wraps the very modules being trained (LoRA layers live inside the UNet), so a preview shows the
adapter as it is at that step. Each image's prompt, seed and step go into the PNG text chunk, in A1111's
`parameters` format too, so dropping it into A1111's PNG Info tab shows where it came from.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL.PngImagePlugin import PngInfo

from trainer.config import SamplingConfig
from trainer.fsutil import atomic_write
from trainer.models.load import BaseModel

SAMPLER_NAMES = {"euler_a": "Euler a", "dpmpp_2m_karras": "DPM++ 2M Karras"}


def make_scheduler(name: str, training_scheduler):
    from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    config = training_scheduler.config
    if name == "dpmpp_2m_karras":
        return DPMSolverMultistepScheduler.from_config(config, use_karras_sigmas=True,
                                                       algorithm_type="dpmsolver++", solver_order=2)
    return EulerAncestralDiscreteScheduler.from_config(config)


def build_pipeline(model: BaseModel, sampler: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = make_scheduler(sampler, model.noise_scheduler)
    if model.is_sdxl:
        return StableDiffusionXLPipeline(
            vae=model.vae, text_encoder=model.text_encoders[0], text_encoder_2=model.text_encoders[1],
            tokenizer=model.tokenizers[0], tokenizer_2=model.tokenizers[1], unet=model.unet,
            scheduler=scheduler, force_zeros_for_empty_prompt=True)
    return StableDiffusionPipeline(
        vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0], unet=model.unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@torch.no_grad()
def render_samples(model: BaseModel, cfg: SamplingConfig, resolution: int, step: int, out_dir: Path,
                   device) -> list[tuple[Path, str, int]]:
    """Render one image per prompt; return [(path, prompt, seed)]. Training modes are restored after."""
    pipe = build_pipeline(model, cfg.sampler)
    pipe.set_progress_bar_config(disable=True)
    modules = [model.unet, *model.text_encoders]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    width, height = cfg.width or resolution, cfg.height or resolution
    results = []
    try:
        for index, prompt in enumerate(cfg.prompts):
            seed = cfg.seed + index
            generator = torch.Generator(device="cpu").manual_seed(seed)
            latents = pipe(prompt, negative_prompt=cfg.negative_prompt or None, num_inference_steps=cfg.steps,
                           guidance_scale=cfg.guidance_scale, width=width, height=height,
                           generator=generator, output_type="latent").images
            image = decode_latents(pipe, latents)[0]
            path = Path(out_dir) / f"step{step:06d}_p{index:02d}.png"
            info = _png_info(prompt, cfg, seed, step, width, height, model.description)
            atomic_write(path, lambda tmp, im=image, inf=info: im.save(tmp, format="PNG", pnginfo=inf))
            results.append((path, prompt, seed))
    finally:
        for m, mode in zip(modules, was_training):
            m.train(mode)
    return results


def decode_latents(pipe, latents: torch.Tensor) -> list:
    """Latents to PIL images with the VAE in its own dtype. The VAE stays fp32 while the UNet may be bf16,
    fp16 or fp8; diffusers' SD pipeline would hand the UNet's dtype to the VAE ("Input type and bias type
    should be the same")."""
    vae = pipe.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    latents = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor + shift
    pixels = vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(pixels.float(), output_type="pil")


def _png_info(prompt: str, cfg: SamplingConfig, seed: int, step: int, w: int, h: int, model: str) -> PngInfo:
    parameters = (f"{prompt}\nNegative prompt: {cfg.negative_prompt}\n"
                  f"Steps: {cfg.steps}, Sampler: {SAMPLER_NAMES[cfg.sampler]}, CFG scale: {cfg.guidance_scale}, "
                  f"Seed: {seed}, Size: {w}x{h}, Model: {model}, LoRA step: {step}")
    info = PngInfo()
    info.add_text("parameters", parameters)
    for key, value in (("prompt", prompt), ("seed", str(seed)), ("step", str(step))):
        info.add_text(key, value)
    return info
