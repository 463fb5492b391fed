"""Image-to-text captioning with a transformers model from a local folder (BLIP, BLIP-2, Florence-2-style).

`AutoProcessor` + `AutoModelForImageTextToText` load most of them; BLIP's own classes are the fallback for
folders saved by older transformers releases. `local_files_only`: nothing is ever downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.data.captioners.base import Captioner, CaptionerError, check_memory, resolve_device

MAX_NEW_TOKENS = 40


def _load(folder: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        return AutoProcessor.from_pretrained(folder, local_files_only=True), \
            AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
    except (ValueError, KeyError, OSError):
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type", "")
        if model_type != "blip":
            raise
        from transformers import BlipForConditionalGeneration, BlipProcessor

        return BlipProcessor.from_pretrained(folder, local_files_only=True), \
            BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True)


class ImageToText(Captioner):
    name = "image-to-text"

    def __init__(self, folder: Path, device: str = "auto"):
        import torch

        self.device = resolve_device(device)
        check_memory(folder, self.device)
        try:
            self.processor, model = _load(Path(folder))
        except (ValueError, KeyError, OSError) as exc:
            raise CaptionerError(f"{folder} has a config.json but no image-to-text model transformers can "
                                 f"load: {str(exc).splitlines()[0]}",
                                 "use a BLIP/BLIP-2/Florence-2-style captioning model folder") from None
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.model = model.to(self.device, dtype=dtype).eval()
        self.dtype = dtype

    def caption(self, image) -> str:
        import torch

        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
        inputs = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        text = self.processor.batch_decode(ids, skip_special_tokens=True)[0]
        return " ".join(text.split())
