"""WD14-style booru tagger: model.onnx + selected_tags.csv, run with onnxruntime (no torch needed).

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

from trainer.data.captioning.base import Captioner, CaptionerError, TaggerOptions
from trainer.data.captioning.image import on_white
from trainer.data.captioning.memory import check_memory

GENERAL, CHARACTER, RATING = 0, 4, 9
DEFAULT_SIDE = 448  # every wd-v3 tagger; used only when the graph leaves the side dynamic
# Emoticons whose underscore is part of the face, not a word separator (the list SmilingWolf's demo keeps).
KAOMOJI = {"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o",
           "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"}


def read_tags(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        raise CaptionerError(f"{path.parent} has model.onnx but no selected_tags.csv",
                             "copy the model's selected_tags.csv next to model.onnx")
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
        tags = [(row["name"], int(row["category"])) for row in rows]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError):
        tags = []
    if not tags:
        raise CaptionerError(f"{path} is not a tag list (needs rows with the columns name and category)",
                             "use the selected_tags.csv that came with the model")
    return tags


def _providers(device: str) -> tuple[list, str]:
    """onnxruntime's execution providers for `device`, and the device we really run on."""
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    if not device.startswith("cuda"):
        return ["CPUExecutionProvider"], "cpu"
    if not has_cuda:
        raise CaptionerError("--device cuda was asked for but this onnxruntime has no CUDA support",
                             "pip install onnxruntime-gpu (in place of onnxruntime), or use --device cpu")
    index = int(device.partition(":")[2] or 0)
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], device


def _side(shape: list, path: Path) -> int:
    # NHWC: [batch, side, side, 3]. A channels-first graph is some other model, not a WD14 tagger.
    if len(shape) != 4 or (isinstance(shape[3], int) and shape[3] != 3):
        raise CaptionerError(f"{path} takes input of shape {shape}, not images as [batch, side, side, 3]",
                             "WD14-style taggers take NHWC images; this ONNX file is another kind of model")
    return shape[1] if isinstance(shape[1], int) and shape[1] > 0 else DEFAULT_SIDE


class OnnxTagger(Captioner):
    name = "wd14-tagger"

    def __init__(self, folder: Path, options: TaggerOptions, device: str = "auto"):
        import onnxruntime as ort

        model = self.model_path = folder / "model.onnx"
        providers, self.device = _providers(device)
        check_memory(folder, self.device)
        self.tags = read_tags(folder / "selected_tags.csv")
        try:
            self.session = ort.InferenceSession(str(model), providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for corrupt or unsupported graphs
            raise CaptionerError(f"{model} could not be loaded: {str(exc).strip()[:300]}",
                                 "download the model file again; it may be incomplete") from None
        self.input = self.session.get_inputs()[0]
        self.side = _side(self.input.shape, model)
        self._check_outputs(self.session.get_outputs()[0].shape[-1], model)
        self.options = options
        # The exclude list compares in the form we write (spaces, any case), whatever form the user typed.
        self.excluded = {_plain(t) for t in options.exclude}

    def _check_outputs(self, count, model: Path) -> None:
        if isinstance(count, int) and count != len(self.tags):
            raise CaptionerError(
                f"{model} scores {count} tags but selected_tags.csv lists {len(self.tags)}",
                "the two files come from different models: use the pair that was published together")

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The model's input: padded to a square on white, resized, BGR 0-255 float32, batch of one."""
        image = on_white(image)
        side = max(image.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        square = square.resize((self.side, self.side), Image.Resampling.BICUBIC)
        rgb = np.asarray(square, dtype=np.float32)
        return np.ascontiguousarray(rgb[:, :, ::-1][None])  # RGB -> BGR, add the batch axis

    def scores(self, image: Image.Image) -> np.ndarray:
        scores = self.session.run(None, {self.input.name: self.pixels(image)})[0].reshape(-1)
        self._check_outputs(len(scores), self.model_path)  # graphs with a dynamic output size
        return scores

    def caption(self, image: Image.Image) -> str:
        return ", ".join(self.select(self.scores(image)))

    def select(self, scores: np.ndarray) -> list[str]:
        """Tags over their category's threshold: characters first, then general tags, each by score."""
        limits = {GENERAL: self.options.general_threshold, CHARACTER: self.options.character_threshold}
        found = []
        for (name, category), score in zip(self.tags, scores):
            limit = limits.get(category)
            if limit is None or score < limit:
                continue  # ratings (and unknown categories) are never written
            tag = name if name in KAOMOJI or not self.options.underscores_to_spaces else name.replace("_", " ")
            if _plain(tag) not in self.excluded:
                found.append((category != CHARACTER, -float(score), tag))
        return [tag for _general, _score, tag in sorted(found)]


def _plain(tag: str) -> str:
    tag = tag.strip().lower()
    return tag if tag in KAOMOJI else tag.replace("_", " ")
