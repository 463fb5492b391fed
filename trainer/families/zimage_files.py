"""Z-Image's files: the transformer in ComfyUI's original names (trainer/models/zimage_layout.py), Qwen3-4B
(`qwen_3_4b.safetensors`, transformers' `model.layers.N…` names) and FLUX.1's AE (`ae.safetensors`), found
beside the transformer or in ComfyUI's models/text_encoders and models/vae (trainer/families/companions.py);
loaded through the streaming loader, the transformer deferred so that Qwen3 encodes every caption and leaves
memory first. The family module (trainer/families/zimage.py) uses these.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from trainer.families.companions import Role, find_files
from trainer.models.qwen_prompts import ZIMAGE
from trainer.shared.errors import ModelFileError

ROLES = {
    "text_encoder": Role("model.text_encoder", ("qwen_3_4b.safetensors", "qwen_3_4b_fp8_mixed.safetensors",
                                                "qwen3_4b.safetensors"), ("text_encoders", "clip")),
    "vae": Role("model.vae", ("ae.safetensors", "z_image_vae.safetensors", "flux1-ae.safetensors", "ae.sft"),
                ("vae",)),
}
QWEN_PREFIX = "model."


def _json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def build_one(configs: Path, part: str):
    from diffusers import AutoencoderKL, ZImageTransformer2DModel

    from trainer.families.qwen_text import qwen_text_encoder

    if part == "unet":
        return ZImageTransformer2DModel.from_config(_json(configs / "transformer" / "config.json"))
    if part == "vae":
        return AutoencoderKL.from_config(_json(configs / "vae" / "config.json"))
    return qwen_text_encoder(_json(configs / "text_encoder" / "config.json"), ZIMAGE)


def build_scheduler(configs: Path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(_json(configs / "scheduler" / "scheduler_config.json"))


def build_components(configs: Path) -> dict:
    parts = {name: build_one(configs, name) for name in ("unet", "vae", "text_encoder")}
    return {**parts, "scheduler": build_scheduler(configs)}


def load_files(family, path: Path, info, precision, device, given: dict) -> dict:
    """Qwen3 and the AE now; the transformer as a function the loader calls once the captions are encoded."""
    from trainer.models.assets import load_qwen3_tokenizer
    from trainer.models.streaming import TensorFile

    files = find_files(path, given, ROLES, "Z-Image")
    check_text_encoder(files["text_encoder"], "qwen3-4b", "Z-Image")
    configs = info.config_folder()
    parts = {"vae": load_vae(configs, files["vae"], precision).to(device),
             "text_encoder": load_qwen(configs, files["text_encoder"], precision, build_one).to(device),
             "scheduler": build_scheduler(configs), "tokenizer": load_qwen3_tokenizer()}
    parts["unet"] = lambda: load_transformer(configs, TensorFile.open(path), path, precision).to(device)
    return parts


def load_transformer(configs: Path, source, path: Path, precision):
    from trainer.models import zimage_layout
    from trainer.models.streaming import load_component, rows_only

    convert = rows_only(lambda state: zimage_layout.to_diffusers(dict(state)))
    return load_component(lambda: build_one(configs, "unet"), source, source.keys(), convert, precision.dtype_for,
                          f"Z-Image transformer ({path.name})")


def load_vae(configs: Path, file: Path, precision):
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from trainer.models.streaming import TensorFile, load_component

    config = _json(configs / "vae" / "config.json")
    source = TensorFile.open(file)
    return load_component(lambda: build_one(configs, "vae"), source, source.keys(),
                          lambda state: convert_ldm_vae_checkpoint(dict(state), config), precision.vae_dtype_for,
                          f"AE ({file.name})")


def load_qwen(configs: Path, file: Path, precision, build):
    """Only the embedding and the decoder layers the recipe reads: the rest of the file is never read."""
    from trainer.models.streaming import TensorFile, load_component

    source = TensorFile.open(file)
    keep = _qwen_layers(configs, build)
    keys = [k for k in source.keys() if _wanted(k.removeprefix(QWEN_PREFIX), keep)]
    return load_component(lambda: build(configs, "text_encoder"), source, keys,
                          lambda state: {k.removeprefix(QWEN_PREFIX): v for k, v in state.items()},
                          precision.dtype_for, f"Qwen3 text encoder ({file.name})")


def _qwen_layers(configs: Path, build) -> int:
    from accelerate import init_empty_weights

    with init_empty_weights():
        return len(build(configs, "text_encoder").layers)


def _wanted(key: str, keep: int) -> bool:
    m = re.match(r"layers\.(\d+)\.", key)
    return key.startswith("embed_tokens.") or bool(m and int(m[1]) < keep)


QWEN_FILES = {"qwen3-4b": ("Qwen3-4B", "qwen_3_4b.safetensors"), "qwen3-8b": ("Qwen3-8B", "qwen_3_8b.safetensors")}


def check_text_encoder(file: Path, expected: str, label: str) -> None:
    """Refuse, before it loads, a text encoder of the wrong size (Qwen3-8B for a 4B model) or kind. The tiny
    test models' Qwen3 (hidden width under 256) passes for either."""
    from trainer.models import dit_detect
    from trainer.models.safe_load import read_header

    shapes, _ = read_header(file)
    kind = dit_detect.identify(shapes)
    want, name = QWEN_FILES[expected]
    hint = f"set model.text_encoder to {name} (ComfyUI keeps it in models/text_encoders)"
    if kind is None or kind.family != "qwen3":
        raise ModelFileError(f"{file} is not a Qwen3 text encoder ({kind.label if kind else 'unknown file'}); "
                             f"{label} reads {want}", hint)
    width = next(s for k, s in shapes.items() if k.endswith("embed_tokens.weight"))[1]
    if kind.variant != expected and width >= 256:
        raise ModelFileError(f"{file} is {kind.label}, but {label} reads {want}", hint)


def refuse_scaled(path: Path, shapes: dict, label: str) -> None:
    if any(k.endswith((".weight_scale", ".scale_weight")) for k in shapes):
        raise ModelFileError(f"{path} is an fp8 {label} file with per-layer scales (.weight_scale), which LoRA "
                             "Studio does not read yet", "use the bf16 file, or a plain fp8 copy, and set "
                             "performance.weight_dtype = \"fp8\" to keep it small in memory")


def single_files(components: dict, variant: str = "base") -> dict[str, dict]:
    """The three files ComfyUI users keep (the transformer first)."""
    from trainer.families.ldm_layout import vae_file_state
    from trainer.models import zimage_layout

    qwen = {QWEN_PREFIX + k: v for k, v in components["text_encoder"].state_dict().items()}
    name = "z_image_turbo_bf16.safetensors" if variant == "turbo" else "z_image_bf16.safetensors"
    return {name: zimage_layout.to_original(components["unet"].state_dict()),
            "qwen_3_4b.safetensors": qwen, "ae.safetensors": vae_file_state(components["vae"])}


_PREVIEW = {}


def preview_pipeline(family, model, scheduler):
    """ZImagePipeline around the modules being trained. It encodes prompts through our strategy: it reads
    `hidden_states[-2]`, which a Qwen3 cut to the layers Z-Image reads does not have (trainer/families/
    qwen_text.py). A released Qwen3 is left out (previews pass the encodings)."""
    from trainer.models.load import released

    if "class" not in _PREVIEW:
        from diffusers import ZImagePipeline

        class Pipeline(ZImagePipeline):
            def _encode_prompt(self, prompt, device=None, prompt_embeds=None, max_sequence_length=512):
                if prompt_embeds is not None:
                    return prompt_embeds
                from trainer.families.qwen_text import unpadded

                prompts = [prompt] if isinstance(prompt, str) else list(prompt)
                hidden, lengths = family.text.features(self.text_encoder, self.tokenizer, prompts,
                                                       device or self._execution_device, max_sequence_length)
                return unpadded(hidden, lengths)

        _PREVIEW["class"] = Pipeline
    encoder = model.text_encoders[0]
    return _PREVIEW["class"](scheduler=scheduler, vae=model.vae, text_encoder=None if released(encoder) else encoder,
                             tokenizer=model.tokenizers[0], transformer=model.unet)
