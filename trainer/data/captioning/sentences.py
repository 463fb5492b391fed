"""Image-to-text captioning with a transformers model from a local folder (BLIP, BLIP-2, and other models
transformers lists under image-text-to-text).

`AutoProcessor` + `AutoModelForImageTextToText` load most of them; BLIP's own classes are the fallback when
the folder's config.json says `"model_type": "blip"` (older transformers releases and folders saved by
them). Always `local_files_only`: nothing is downloaded, and no code from the folder is run.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.captioning.base import Captioner, CaptionerError, torch_device
from trainer.data.captioning.image import on_white
from trainer.data.captioning.memory import check_memory
from trainer.data.captioning.prompts import read_config

MAX_NEW_TOKENS = 40  # BLIP-large captions are 10-20 tokens; a cap keeps a looping model from running on
LOAD_ERRORS = (ValueError, KeyError, OSError, TypeError)


def model_type(folder: Path) -> str:
    return read_config(folder).get("model_type", "")


def _load(folder: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        return (AutoProcessor.from_pretrained(folder, local_files_only=True),
                AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True))
    except LOAD_ERRORS:
        if model_type(folder) != "blip":
            raise
    from transformers import BlipForConditionalGeneration, BlipProcessor

    return (BlipProcessor.from_pretrained(folder, local_files_only=True),
            BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True))


class ImageToText(Captioner):
    name = "image-to-text"

    def __init__(self, folder: Path, device: str = "auto", max_new_tokens: int | None = None):
        import torch

        self.device = torch_device(device)
        on_gpu = self.device.startswith("cuda")
        check_memory(folder, self.device, 0.5 if on_gpu else 1.0)  # fp16 on a GPU halves fp32 weights
        kind = model_type(folder) or "unknown"
        try:
            self.processor, model = _load(folder)
        except LOAD_ERRORS as exc:
            raise CaptionerError(f"{folder} has a config.json (model_type {kind}) but no image-to-text model "
                                 f"transformers can load: {str(exc).strip().splitlines()[0][:300]}",
                                 "use a BLIP/BLIP-2-style captioning model folder saved with transformers, or a "
                                 "Florence-2, Qwen2/2.5-VL or LLaVA folder"
                                 ) from None
        self.dtype = torch.float16 if on_gpu else torch.float32
        self.model = model.to(self.device, dtype=self.dtype).eval()
        # The folder's own generation settings win over our cap (they know the model's caption length).
        self.max_new_tokens = max_new_tokens or model.generation_config.max_new_tokens or MAX_NEW_TOKENS

    def caption(self, image) -> str:
        import torch

        inputs = self.processor(images=on_white(image), return_tensors="pt").to(self.device)
        inputs = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        text = self.processor.batch_decode(ids, skip_special_tokens=True)[0]
        return " ".join(text.split())
