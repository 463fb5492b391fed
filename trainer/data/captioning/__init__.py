"""Auto-captioning with local models, loaded only from a folder on the user's disk (nothing is downloaded):

- a WD14-style tagger (model.onnx + selected_tags.csv) run by onnxruntime, for booru tags: `tagger.py`;
- a transformers image-to-text model (BLIP, BLIP-2, ...), for sentences: `sentences.py`;
- which images to caption and how to combine with what is there (modes, edited captions): `run.py`.

`load_captioner(folder)` looks at the files and picks the back end, or says plainly what it looked for.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.captioning.base import (
    SENTENCE_OPTIONS,
    TAGGER_OPTIONS,
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
    folder = model_folder(folder)
    if (folder / "model.onnx").is_file():
        return TAGGER
    if (folder / "config.json").is_file():
        return IMAGE_TO_TEXT
    raise CaptionerError(
        f"{folder} holds no supported captioning model",
        "looked for model.onnx + selected_tags.csv (a WD14-style tagger), or config.json + weights of a "
        "transformers image-to-text model (BLIP, BLIP-2)")


def load_captioner(folder: Path, device: str = "auto", **options) -> Captioner:
    """Load the model in `folder` on `device` (auto | cpu | cuda[:N]).

    Options: general_threshold, character_threshold, exclude, underscores_to_spaces (tagger);
    max_new_tokens (image-to-text). Each back end takes the ones it knows, so one call fits both.
    """
    unknown = set(options) - TAGGER_OPTIONS - SENTENCE_OPTIONS
    if unknown:
        raise TypeError(f"unknown captioner option(s): {', '.join(sorted(unknown))}")
    folder = model_folder(folder)
    if detect(folder) == TAGGER:
        from trainer.data.captioning.tagger import OnnxTagger

        return OnnxTagger(folder, TaggerOptions(**{k: v for k, v in options.items() if k in TAGGER_OPTIONS}),
                          device)
    from trainer.data.captioning.sentences import ImageToText

    return ImageToText(folder, device, **{k: v for k, v in options.items() if k in SENTENCE_OPTIONS})
