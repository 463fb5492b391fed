"""Generate images from a base model plus LoRAs: the code behind `generate`, `serve` and the GUI's Test page.

The base loads once (`load_base`); the pipeline wraps its modules with the training previews' samplers
(`trainer.run.sampling`), and LoRAs come and go as peft adapters (`Adapters`). Seeds draw the initial noise on
the CPU, so a seed gives the same image on any device, as in the training previews.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL.PngImagePlugin import PngInfo

from trainer.models.load import BaseModel, load_base_model
from trainer.run.sampling import build_pipeline, decode_latents
from trainer.shared.errors import UserError, some_files
from trainer.shared.fsutil import atomic_write
from trainer.shared.generate_params import Request, parameters_text, split_lora_tags
from trainer.shared.paths import check_name, contained_path
from trainer.tryit.adapters import Adapters
from trainer.tryit.loras import LoraSpec, file_hash, lora_from_dict

log = logging.getLogger("trainer")


class Cancelled(Exception):
    """A cancel request arrived while generating."""


def load_base(spec: str, weight_dtype: str = "auto", device: torch.device | None = None) -> BaseModel:
    """The one place where generate/serve/merge load a base model (performance.weight_dtype's memory path:
    weights stream from the file straight into their dtype)."""
    return load_base_model(spec, weight_dtype=weight_dtype, device=device or pick_device())


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Image:
    """One written image and what made it."""
    path: Path
    seed: int
    index: int
    parameters: str


class Generator:
    def __init__(self, model: BaseModel, device: torch.device | None = None, lora_dirs: list[Path] = ()):
        self.model, self.device = model, device or pick_device()
        for module in (model.unet, model.vae, *model.text_encoders):
            module.to(self.device).eval()
        self.pipe = build_pipeline(model, "euler_a")
        self.pipe.set_progress_bar_config(disable=True)
        compute = model.precision.compute if model.precision is not None else torch.float32
        self.adapters = Adapters(self.pipe, model.arch, compute)
        self.lora_dirs = [Path(d) for d in lora_dirs]

    def default_size(self) -> int:
        """The tiny models' 64 px, else the base's native resolution (the family's fact)."""
        m = self.model
        return 64 if m.is_tiny else m.family.native_resolution(m.prediction_type)

    @torch.no_grad()
    def generate(self, req: Request, on_image: Callable[[Image], None] = lambda image: None,
                 on_step: Callable[[int, int], None] = lambda step, total: None,
                 cancelled: Callable[[], bool] = lambda: False) -> list[Image]:
        prompt, loras = self.resolve(req)
        req = self.settled(req)
        self.adapters.activate(loras)
        self.pipe.scheduler = self.model.family.preview_scheduler(req.sampler, self.model.noise_scheduler)
        width, height = req.width or self.default_size(), req.height or self.default_size()
        hashes = [(s.name, s.weight, s.te_weight, file_hash(s.path)) for s in loras]
        out_dir = Path(req.out or ".").expanduser()
        images, seeds = [], req.seeds()
        for index, seed in enumerate(seeds):
            done_before = index * req.steps
            image = self._one(req, prompt, seed, width, height, cancelled,
                              lambda step, before=done_before: on_step(before + step, len(seeds) * req.steps))
            text = parameters_text(Request(**{**asdict(req), "prompt": prompt}), seed, width, height,
                                   self.model_name(), hashes)
            path = self._write(image, out_dir, req, seed, index, text, loras)
            images.append(Image(path, seed, index, text))
            on_image(images[-1])
        return images

    def settled(self, req: Request) -> Request:
        """The request with the steps and CFG it leaves unset taken from the base model (its family's own)."""
        return req.with_model_defaults(*self.model.family.preview_defaults(self.model.variant, self.model.source))

    def resolve(self, req: Request) -> tuple[str, list[LoraSpec]]:
        """The request's LoRAs plus those named by `<lora:name:w>` tags in its prompt (tag weights win)."""
        try:
            req.check()
            prompt, tags = split_lora_tags(req.prompt)
        except ValueError as exc:
            raise UserError(str(exc), "see lora-studio generate --help for the ranges") from None
        loras = [lora_from_dict(d) for d in req.loras]
        for name, weight, te in tags:
            match = next((i for i, s in enumerate(loras) if s.name == name), None)
            spec = LoraSpec(self._find(name) if match is None else loras[match].path, weight, te)
            if match is None:
                loras.append(spec)
            else:
                loras[match] = spec
        return prompt, loras

    def _find(self, name: str) -> Path:
        """The file a `<lora:NAME>` tag means: FOLDER/NAME.safetensors, else the one file of that name in a
        subfolder (as A1111 finds it). NAME is matched as text, never as a glob pattern, and never leaves
        the folder (trainer.shared.paths)."""
        key = f"<lora:{name}:…> in the prompt"
        parts = tuple(re.split(r"[\\/]", check_name(name, key, subfolders=True)))
        for folder in self.lora_dirs:
            direct = contained_path(folder, name, key, ".safetensors", subfolders=True)
            if direct.is_file():
                return direct
            found = sorted(p for p in folder.rglob("*.safetensors")
                           if p.relative_to(folder).with_suffix("").parts[-len(parts):] == parts and p.is_file())
            if len(found) > 1:
                raise UserError(f"{key} matches {len(found)} files in {folder}: {some_files(found)}",
                                "name the one you mean with its subfolder, e.g. <lora:SUBFOLDER/NAME:1>")
            if found:
                return found[0]
        raise UserError(f"the prompt names <lora:{name}:…> but no {name}.safetensors is given or found",
                        "add --lora PATH/{name}.safetensors, or --lora-dir with the folder that holds it")

    def model_name(self) -> str:
        source = self.model.source
        return source if source.startswith("demo:") else Path(source).stem

    def _one(self, req: Request, prompt: str, seed: int, width: int, height: int, cancelled, on_step):
        def step_end(pipe, step, timestep, kwargs):
            on_step(step + 1)
            if cancelled():
                raise Cancelled()
            return kwargs

        generator = torch.Generator(device="cpu").manual_seed(seed)
        sampling = self.model.family.sampling_kwargs(self.model, req.steps, req.cfg, 0.0)
        latents = self.pipe(prompt, negative_prompt=req.negative or None, **sampling, width=width, height=height,
                            generator=generator, callback_on_step_end=step_end, output_type="latent").images
        latents = self.model.family.preview_latents(self.pipe, latents, width, height)
        return decode_latents(self.pipe, latents, self.model.family)[0]   # the VAE in its own dtype, as the previews do

    def _write(self, image, out_dir: Path, req: Request, seed: int, index: int, text: str,
               loras: list[LoraSpec]) -> Path:
        stem = f"{req.name}-{index:02d}" if req.name else f"{_next_number(out_dir):05d}-{seed}"
        path = contained_path(out_dir, stem, "request field 'name'", ".png")
        info = PngInfo()
        info.add_text("parameters", text)
        info.add_text("lora_studio", json.dumps({"seed": seed, "prompt": req.prompt, "steps": req.steps,
                                                 "cfg": req.cfg, "sampler": req.sampler,
                                                 "loras": [s.to_dict() for s in loras]}))
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))
        return path


def _next_number(folder: Path) -> int:
    numbers = [int(m[1]) for p in folder.glob("*.png") if (m := re.match(r"(\d{5})-", p.name))]
    return max(numbers, default=-1) + 1

