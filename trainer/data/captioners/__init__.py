"""Local captioning models, loaded only from a folder on the user's disk (nothing is downloaded):

- a transformers image-to-text model (BLIP, BLIP-2, Florence-2-style) for sentences: `sentences.py`;
- a WD14-style tagger (model.onnx + selected_tags.csv) run by onnxruntime for booru tags: `tagger.py`.

`load_captioner(folder)` looks at the files and picks the back end, or says plainly what it looked for.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.captioners.base import Captioner, CaptionerError, TaggerOptions

__all__ = ["Captioner", "CaptionerError", "TaggerOptions", "load_captioner"]


def load_captioner(folder: Path, device: str = "auto", options: TaggerOptions | None = None) -> Captioner:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CaptionerError(f"captioning model folder not found: {folder}",
                             "choose the folder you unpacked the model into")
    if (folder / "model.onnx").exists():
        from trainer.data.captioners.tagger import OnnxTagger

        return OnnxTagger(folder, options or TaggerOptions(), device)
    if (folder / "config.json").exists():
        from trainer.data.captioners.sentences import ImageToText

        return ImageToText(folder, device)
    raise CaptionerError(
        f"{folder} holds no supported captioning model",
        "expected model.onnx + selected_tags.csv (a WD14-style tagger), or config.json + weights of a "
        "transformers image-to-text model (BLIP, BLIP-2, Florence-2)")
