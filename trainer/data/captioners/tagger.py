"""WD14-style booru tagger: model.onnx + selected_tags.csv, run with onnxruntime.

Facts of the format (SmilingWolf's wd-*-tagger models and the taggers in kohya/A1111 extensions follow it):
the input is NHWC float32 in BGR order with 0-255 values, the image padded to a square on white and resized
to the model's side (read from the input shape); the output is one sigmoid score per row of
selected_tags.csv, whose `category` is 0 for general tags, 4 for characters and 9 for ratings.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from trainer.data.captioners.base import (
    Captioner,
    CaptionerError,
    TaggerOptions,
    check_memory,
    resolve_device,
)

GENERAL, CHARACTER, RATING = 0, 4, 9
# Emoticons whose underscore is part of the face, not a word separator.
KAOMOJI = {"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o",
           "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"}


def read_tags(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        raise CaptionerError(f"{path.parent} has model.onnx but no selected_tags.csv",
                             "copy the model's selected_tags.csv next to model.onnx")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"name", "category"} <= set(rows[0]):
        raise CaptionerError(f"{path} is not a tag list (needs the columns name and category)",
                             "use the selected_tags.csv that came with the model")
    return [(row["name"], int(row["category"])) for row in rows]


class OnnxTagger(Captioner):
    name = "wd14-tagger"

    def __init__(self, folder: Path, options: TaggerOptions, device: str = "auto"):
        import onnxruntime as ort

        device = resolve_device(device)
        check_memory(folder, device)
        self.tags = read_tags(folder / "selected_tags.csv")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") \
            else ["CPUExecutionProvider"]
        available = [p for p in providers if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(folder / "model.onnx"), providers=available)
        except Exception as exc:  # onnxruntime raises its own types for corrupt or unsupported graphs
            raise CaptionerError(f"{folder / 'model.onnx'} could not be loaded: {exc}",
                                 "re-download the model file; it may be incomplete") from None
        self.input = self.session.get_inputs()[0]
        self.side = int(self.input.shape[1]) if isinstance(self.input.shape[1], int) else 448
        outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != len(self.tags):
            raise CaptionerError(
                f"{folder / 'model.onnx'} scores {outputs} tags but selected_tags.csv lists {len(self.tags)}",
                "the two files come from different models: use the pair that was published together")
        self.options = options

    def _pixels(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        side = max(image.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        square = square.resize((self.side, self.side), Image.Resampling.BICUBIC)
        rgb = np.asarray(square, dtype=np.float32)
        return rgb[:, :, ::-1][None].copy()  # RGB -> BGR, add the batch axis

    def scores(self, image: Image.Image) -> np.ndarray:
        return self.session.run(None, {self.input.name: self._pixels(image)})[0][0]

    def caption(self, image: Image.Image) -> str:
        o = self.options
        excluded = {t.strip().lower().replace("_", " ") for t in o.exclude if t.strip()}
        found = []
        for (name, category), score in zip(self.tags, self.scores(image)):
            limit = {GENERAL: o.general_threshold, CHARACTER: o.character_threshold}.get(category)
            if limit is None or score < limit:
                continue  # ratings and unknown categories are never written
            tag = name.replace("_", " ") if o.underscores_to_spaces and name not in KAOMOJI else name
            if tag.lower().replace("_", " ") not in excluded:
                found.append((category != CHARACTER, -float(score), tag))
        return ", ".join(tag for _general, _score, tag in sorted(found))
