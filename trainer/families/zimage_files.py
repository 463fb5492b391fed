"""Z-Image's files: the transformer in ComfyUI's original names (trainer/models/zimage_layout.py), Qwen3-4B
(`qwen_3_4b.safetensors`, transformers' `model.layers.N…` names) and FLUX.1's AE (`ae.safetensors`), found
beside the transformer or in ComfyUI's models/text_encoders and models/vae (trainer/families/companions.py);
loaded through the streaming loader, the transformer deferred so that Qwen3 encodes every caption and leaves
memory first. The family module (trainer/families/zimage.py) uses these.
"""

from __future__ import annotations

from pathlib import Path

from trainer.families.companions import Role, find_files
from trainer.families.qwen_files import QWEN_PREFIX, build_scheduler, check_text_encoder, json_file, load_qwen
from trainer.models.qwen_prompts import ZIMAGE

ROLES = {
    "text_encoder": Role("model.text_encoder", ("qwen_3_4b.safetensors", "qwen_3_4b_fp8_mixed.safetensors",
                                                "qwen3_4b.safetensors"), ("text_encoders", "clip")),
    "vae": Role("model.vae", ("ae.safetensors", "z_image_vae.safetensors", "flux1-ae.safetensors", "ae.sft"),
                ("vae",)),
}


def build_one(configs: Path, part: str):
    from diffusers import AutoencoderKL, ZImageTransformer2DModel

    from trainer.families.qwen_text import qwen_text_encoder

    if part == "unet":
        return ZImageTransformer2DModel.from_config(json_file(configs / "transformer" / "config.json"))
    if part == "vae":
        return AutoencoderKL.from_config(json_file(configs / "vae" / "config.json"))
    return qwen_text_encoder(json_file(configs / "text_encoder" / "config.json"), ZIMAGE)


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
    parts["unet"] = lambda: load_transformer(configs, TensorFile.open(path), path, precision)
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

    config = json_file(configs / "vae" / "config.json")
    source = TensorFile.open(file)
    return load_component(lambda: build_one(configs, "vae"), source, source.keys(),
                          lambda state: convert_ldm_vae_checkpoint(dict(state), config), precision.vae_dtype_for,
                          f"AE ({file.name})")


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
