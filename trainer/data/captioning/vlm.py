"""Natural-language captions from a local vision-language model: Florence-2 (task tokens), Qwen2/2.5-VL and
LLaVA-family models such as JoyCaption (an instruction through the model's chat template).

transformers' own classes do the work: `AutoProcessor` and `AutoModelForImageTextToText`, always with
`local_files_only` and never the folder's own code. On a GPU the weights load in bf16 (fp16 where the GPU
has no bf16), or 8-/4-bit with bitsandbytes; several images go through one `generate` call.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

from trainer.data.captioning.base import Captioner, CaptionerError, torch_device
from trainer.data.captioning.image import on_white
from trainer.data.captioning.memory import check_memory
from trainer.data.captioning.prompts import (
    FLORENCE,
    LLAVA,
    MAX_TOKENS,
    check_florence_prompt,
    default_prompt,
    read_config,
    vlm_kind,
)

QUANTIZE = ("none", "8bit", "4bit")
# Qwen-VL reads an image at its own size (up to 12.8 MP: ~16k tokens, minutes and gigabytes per image); a
# caption needs no more than this. Florence-2 (768 px) and LLaVA (336-672 px) resize further themselves.
MAX_SIDE = 1024
GPU_BATCH = 4  # images per generate call on a GPU; on a CPU a real model is compute-bound: 1
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# Quantizing the vision tower or the projector costs caption quality for little memory (they are small).
KEEP_FULL_PRECISION = ["vision_tower", "visual", "multi_modal_projector", "lm_head"]
LOAD_ERRORS = (ValueError, KeyError, OSError, TypeError, ImportError)
# LLaVA-1.5's conversation form, for LLaVA folders saved without a chat template.
LLAVA_PLAIN = "USER: <image>\n{prompt} ASSISTANT:"


class VisionLanguage(Captioner):
    def __init__(self, folder: Path, device: str = "auto", prompt: str = "", length: str = "paragraph",
                 max_new_tokens: int | None = None, quantize: str = "none", batch_size: int | None = None):
        self.kind = self.name = vlm_kind(folder)
        self.device = torch_device(device)
        self.prompt = prompt.strip() or default_prompt(self.kind, length)
        if self.kind == FLORENCE:
            check_florence_prompt(self.prompt)
        _refuse_remote_code_folder(folder, self.kind)
        self.dtype = _dtype(self.device)
        check_memory(folder, self.device, _bytes_per_stored_byte(folder, self.dtype, quantize))
        self.processor = load_processor(folder, self.kind)
        self.text = self._prompt_text()  # before the (slow) model load: a folder without a template fails fast
        self.model = load_model(folder, self.device, self.dtype, quantize)
        self.decoder_only = not self.model.config.is_encoder_decoder
        if self.decoder_only:  # generate continues each row from its end: pad on the left
            self.processor.tokenizer.padding_side = "left"
        self.max_new_tokens = max_new_tokens or MAX_TOKENS.get(length, MAX_TOKENS["paragraph"])
        self.batch_size = batch_size or (GPU_BATCH if self.device.startswith("cuda") else 1)

    def _prompt_text(self) -> str:
        """What the processor gets as text for every image: the task token, or the chat turn asking for it."""
        if self.kind == FLORENCE:
            return self.prompt
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if self.kind == LLAVA:
            return LLAVA_PLAIN.format(prompt=self.prompt)
        raise CaptionerError("the model folder has no chat template (chat_template.jinja or .json)",
                             "copy the model folder again with all its files")

    def caption(self, image) -> str:
        return self.caption_batch([image])[0]

    def caption_batch(self, images: list) -> list[str]:
        import torch

        inputs = self.processor(images=[_fit(on_white(i)) for i in images], text=[self.text] * len(images),
                                return_tensors="pt", padding=True).to(self.device)
        inputs = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        if self.decoder_only:  # the output repeats the prompt first
            ids = ids[:, inputs["input_ids"].shape[1]:]
        return [" ".join(text.split()) for text in self.processor.batch_decode(ids, skip_special_tokens=True)]


def _fit(image):
    if max(image.size) <= MAX_SIDE:
        return image
    scale = MAX_SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _dtype(device: str):
    import torch

    if not device.startswith("cuda"):
        return torch.float32  # half precision on a CPU is slow or unsupported
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _bytes_per_stored_byte(folder: Path, dtype, quantize: str) -> float:
    """How much memory a byte of the weight files takes once loaded (the files may be fp32 or bf16)."""
    import torch

    config = read_config(folder)
    stored = config.get("dtype") or config.get("torch_dtype") or \
        (config.get("text_config") or {}).get("dtype") or "float32"
    loaded = {"8bit": 1.0, "4bit": 0.5}.get(quantize) or torch.finfo(dtype).bits / 8
    return loaded / DTYPE_BYTES.get(str(stored), 4)


def _refuse_remote_code_folder(folder: Path, kind: str) -> None:
    # Microsoft's original Florence-2 repositories hold their own model code (a "davit" vision config and
    # an auto_map). transformers' class would load their weights under other names, leaving it random.
    vision = read_config(folder).get("vision_config") or {}
    if kind == FLORENCE and vision.get("model_type") == "davit":
        raise CaptionerError(f"{folder} is the original Florence-2 release, which runs its own code from the "
                             "folder (LoRA Studio never does)",
                             "download the transformers-native copy instead, e.g. florence-community/"
                             "Florence-2-large (or -base)")


def load_processor(folder: Path, kind: str):
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(folder, local_files_only=True)
    except ImportError as exc:  # Qwen-VL processors: their video half needs torchvision
        if "torchvision" not in str(exc).lower():
            raise _unloadable(folder, kind, exc) from None
    except LOAD_ERRORS as exc:
        raise _unloadable(folder, kind, exc) from None
    from trainer.data.captioning.image_only import image_only_processor

    try:
        return image_only_processor(folder)
    except LOAD_ERRORS as exc:
        raise _unloadable(folder, kind, exc) from None


def load_model(folder: Path, device: str, dtype, quantize: str):
    from transformers import AutoModelForImageTextToText

    options = {"dtype": dtype}
    if quantize != "none":
        options.update(quantization_config=_quantization(quantize, device, dtype), device_map={"": device})
    try:
        model, info = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True,
                                                                  output_loading_info=True, **options)
    except LOAD_ERRORS as exc:
        raise _unloadable(folder, vlm_kind(folder), exc) from None
    if info.get("missing_keys"):  # transformers only warns, and the missing weights would be random
        raise CaptionerError(f"{folder}: {len(info['missing_keys'])} weights the model needs are not in its "
                             f"files (first: {sorted(info['missing_keys'])[0]})",
                             "the folder is incomplete or was saved for another model class; copy it again")
    if quantize == "none":
        model = model.to(device)
    return model.eval()


def _quantization(quantize: str, device: str, dtype):
    if quantize not in QUANTIZE:
        raise CaptionerError(f"--quantize {quantize} is not one of {', '.join(QUANTIZE)}", "use 8bit or 4bit")
    if not device.startswith("cuda"):
        raise CaptionerError(f"--quantize {quantize} needs a CUDA GPU (bitsandbytes runs there)",
                             "leave --quantize out on a CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise CaptionerError(f"--quantize {quantize} needs the bitsandbytes package",
                             "pip install bitsandbytes (or install LoRA Studio with its cuda extra)")
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=KEEP_FULL_PRECISION)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                              llm_int8_skip_modules=KEEP_FULL_PRECISION)


def _unloadable(folder: Path, kind: str, exc: Exception) -> CaptionerError:
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return CaptionerError(f"{folder} looks like a {kind} model but transformers cannot load it: {detail}",
                          "copy the whole model folder (config.json, weights, tokenizer and processor files); "
                          "LoRA Studio reads only transformers-format folders, never a folder's own code")
