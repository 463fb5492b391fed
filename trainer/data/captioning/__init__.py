"""Auto-captioning with local models, loaded only from a folder on the user's disk (nothing is downloaded):

- a WD14-style tagger (model.onnx + selected_tags.csv) run by onnxruntime, for booru tags: `tagger.py`;
- a transformers image-to-text model (BLIP, BLIP-2, ...), for sentences: `sentences.py`;
- a vision-language model (Florence-2, Qwen2/2.5-VL, LLaVA/JoyCaption) with a prompt, for sentences or a
  paragraph: `vlm.py` (which kind and what to ask: `prompts.py`);
- post-processing (boilerplate openings, the CLIP token budget): `finish.py`;
- which images to caption and how to combine with what is there (modes, edited captions): `run.py`.

`load_captioner(folder)` looks at the files and picks the back end, or says plainly what it looked for.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.captioning.base import (
    SENTENCE_OPTIONS,
    TAGGER_OPTIONS,
    VLM_OPTIONS,
    Captioner,
    CaptionerError,
    TaggerOptions,
)

__all__ = ["Captioner", "CaptionerError", "TaggerOptions", "detect", "load_captioner"]

TAGGER, IMAGE_TO_TEXT = "wd14-tagger", "image-to-text"
MODEL_FILES = ("model.onnx", "selected_tags.csv", "config.json")


def model_folder(path: Path) -> Path:
    """The folder itself, or the folder of a model file the user picked instead of its folder."""
    path = Path(path).expanduser()
    if path.is_file() and path.name in MODEL_FILES:
        return path.parent
    if not path.is_dir():
        raise CaptionerError(f"captioning model folder not found: {path}",
                             "choose the folder you unpacked the model into")
    return path


def detect(folder: Path) -> str:
    """TAGGER, IMAGE_TO_TEXT, or the vision-language kind (prompts.FLORENCE, QWEN, LLAVA)."""
    from trainer.data.captioning.prompts import vlm_kind

    folder = model_folder(folder)
    if (folder / "model.onnx").is_file():
        return TAGGER
    if (folder / "config.json").is_file():
        return vlm_kind(folder) or IMAGE_TO_TEXT
    raise CaptionerError(
        f"{folder} holds no supported captioning model",
        "looked for model.onnx + selected_tags.csv (a WD14-style tagger), or config.json + weights of a "
        "transformers model: image-to-text (BLIP, BLIP-2) or vision-language (Florence-2, Qwen2/2.5-VL, "
        "LLaVA, JoyCaption)")


def load_captioner(folder: Path, device: str = "auto", **options) -> Captioner:
    """Load the model in `folder` on `device` (auto | cpu | cuda[:N]).

    Options: general_threshold, character_threshold, exclude, underscores_to_spaces (tagger);
    max_new_tokens (image-to-text); prompt, length, max_new_tokens, quantize, batch_size (vision-language).
    Each back end takes the ones it knows, so one call fits all.
    """
    unknown = set(options) - TAGGER_OPTIONS - SENTENCE_OPTIONS - VLM_OPTIONS
    if unknown:
        raise TypeError(f"unknown captioner option(s): {', '.join(sorted(unknown))}")
    folder = model_folder(folder)
    kind = detect(folder)
    if kind == TAGGER:
        from trainer.data.captioning.tagger import OnnxTagger

        return OnnxTagger(folder, TaggerOptions(**_only(options, TAGGER_OPTIONS)), device)
    if kind == IMAGE_TO_TEXT:
        from trainer.data.captioning.sentences import ImageToText

        return ImageToText(folder, device, **_only(options, SENTENCE_OPTIONS))
    from trainer.data.captioning.vlm import VisionLanguage

    return VisionLanguage(folder, device, **_only(options, VLM_OPTIONS))


def _only(options: dict, names: set[str]) -> dict:
    # None means "not given" (the CLI passes every option): the back end's default applies.
    return {k: v for k, v in options.items() if k in names and v is not None}
