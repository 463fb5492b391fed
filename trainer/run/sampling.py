"""Preview images during training: fixed prompts and seeds, an A1111-like sampler, PNGs with their settings.

The pipeline wraps the very modules being trained (LoRA layers live inside the UNet), so a preview shows the
adapter as it is at that step. Each image's prompt, seed and step go into the PNG text chunk, in A1111's
`parameters` format too, so dropping it into A1111's PNG Info tab shows where it came from.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL.PngImagePlugin import PngInfo

from trainer.models.load import BaseModel
from trainer.shared.config import SamplingConfig
from trainer.shared.fsutil import atomic_write
from trainer.shared.prompts import PromptSettings, parse_prompt
from trainer.shared.run_folder import sample_name

SAMPLER_NAMES = {"euler_a": "Euler a", "dpmpp_2m_karras": "DPM++ 2M Karras"}


def make_scheduler(name: str, training_scheduler):
    from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    config = training_scheduler.config
    if name == "dpmpp_2m_karras":
        return DPMSolverMultistepScheduler.from_config(config, use_karras_sigmas=True,
                                                       algorithm_type="dpmsolver++", solver_order=2)
    return EulerAncestralDiscreteScheduler.from_config(config)


def build_pipeline(model: BaseModel, sampler: str):
    """The family's diffusers pipeline around the very modules being trained, with the chosen sampler."""
    return model.family.preview_pipeline(model, model.family.preview_scheduler(sampler, model.noise_scheduler))


@torch.no_grad()
def render_samples(model: BaseModel, cfg: SamplingConfig, resolution: int, step: int, out_dir: Path,
                   device, clip_skip: int = 1, max_tokens: int = 75) -> list[tuple[Path, str, int]]:
    """Render one image per prompt; return [(path, prompt, seed)]. Training modes are restored after."""
    pipe = build_pipeline(model, cfg.sampler)
    pipe.set_progress_bar_config(disable=True)
    modules = [model.unet, *model.text_encoders]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    # zero-terminal-SNR models over-saturate with plain CFG; 0.7 is the paper's (and diffusers') rescale
    rescale = 0.7 if model.noise_scheduler.config.get("rescale_betas_zero_snr") else 0.0
    results = []
    try:
        for index, text in enumerate(cfg.prompts):
            s = parse_prompt(text, cfg, resolution, index,  # kohya's per-prompt --n --w --h --s --l --d
                             model.family.preview_defaults(model.variant, model.source))
            generator = torch.Generator(device="cpu").manual_seed(s.seed)
            embeds = prompt_embeds(model, s.prompt, s.negative, device, clip_skip, max_tokens)
            sampling = model.family.sampling_kwargs(model, s.steps, s.guidance_scale, rescale)
            latents = pipe(**embeds, **sampling, width=s.width, height=s.height, generator=generator,
                           output_type="latent").images
            latents = model.family.preview_latents(pipe, latents, s.width, s.height)
            image = decode_latents(pipe, latents, model.family)[0]
            path = Path(out_dir) / sample_name(step, index)
            info = _png_info(s, cfg.sampler, step, model.description, clip_skip)
            atomic_write(path, lambda tmp, im=image, inf=info: im.save(tmp, format="PNG", pnginfo=inf))
            results.append((path, s.prompt, s.seed))
    finally:
        for m, mode in zip(modules, was_training):
            m.train(mode)
    return results


def decode_latents(pipe, latents: torch.Tensor, family=None) -> list:
    """Latents to PIL images with the VAE in its own dtype. The VAE stays fp32 while the UNet may be bf16,
    fp16 or fp8; diffusers' SD pipeline would hand the UNet's dtype to the VAE ("Input type and bias type
    should be the same")."""
    vae = pipe.vae
    if family is None:
        from trainer.families.base import Family

        family = Family()
    latents = family.decode_latents(vae, latents.to(vae.device, vae.dtype))
    pixels = vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(pixels.float(), output_type="pil")


def prompt_embeds(model: BaseModel, prompt: str, negative: str, device, clip_skip: int, max_tokens: int = 75) -> dict:
    """The pipeline's conditioning keywords, encoded exactly as in training (the family's text strategy)."""
    return model.family.prompt_kwargs(model, prompt, negative, device, clip_skip, max_tokens)


def _png_info(s: PromptSettings, sampler: str, step: int, model: str, clip_skip: int = 1) -> PngInfo:
    skip = f", Clip skip: {clip_skip}" if clip_skip > 1 else ""  # A1111 writes it only when not 1
    parameters = (f"{s.prompt}\nNegative prompt: {s.negative}\n"
                  f"Steps: {s.steps}, Sampler: {SAMPLER_NAMES[sampler]}, CFG scale: {s.guidance_scale}, "
                  f"Seed: {s.seed}, Size: {s.width}x{s.height}, Model: {model}, LoRA step: {step}{skip}")
    info = PngInfo()
    info.add_text("parameters", parameters)
    for key, value in (("prompt", s.prompt), ("seed", str(s.seed)), ("step", str(step))):
        info.add_text(key, value)
    return info
