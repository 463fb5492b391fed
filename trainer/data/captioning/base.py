"""What every captioner offers, the tagger's options, and the error both back ends raise."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from trainer.shared.errors import UserError


class CaptionerError(UserError):
    """The folder holds no usable model, its files disagree, or it would not fit in memory."""


@dataclass
class TaggerOptions:
    general_threshold: float = 0.35    # the usual WD14 default; lower gives more tags
    character_threshold: float = 0.85  # characters are named only when the model is sure
    exclude: list[str] = field(default_factory=list)
    underscores_to_spaces: bool = True  # booru tags use underscores, SD prompts use spaces

    def __post_init__(self):
        for name in ("general_threshold", "character_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise CaptionerError(f"tagger option {name} = {value} is outside 0..1",
                                     "a threshold is a score between 0 and 1 (0.35 and 0.85 are usual)")
        if isinstance(self.exclude, str):  # "a, b" from a text field or the command line
            self.exclude = self.exclude.split(",")
        self.exclude = [t.strip() for t in self.exclude if t.strip()]


TAGGER_OPTIONS = {f.name for f in fields(TaggerOptions)}
SENTENCE_OPTIONS = {"max_new_tokens"}
VLM_OPTIONS = {"max_new_tokens", "prompt", "length", "quantize", "batch_size"}


class Captioner:
    """One loaded model. `caption` takes a PIL image (any mode) and returns the caption text;
    `caption_batch` several at once (in one call to the model where it can: `batch_size` says how many)."""

    name = "captioner"
    device = "cpu"
    batch_size = 1

    def caption(self, image) -> str:
        raise NotImplementedError

    def caption_batch(self, images: list) -> list[str]:
        return [self.caption(image) for image in images]


def torch_device(device: str) -> str:
    """'auto' -> cuda when torch sees a GPU; an explicit 'cuda' without one is refused, not ignored."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CaptionerError("--device cuda was asked for but PyTorch sees no CUDA GPU",
                             "use --device cpu (or auto), or install a CUDA build of PyTorch")
    return device
