"""Qwen2-VL / Qwen2.5-VL processors without their video half.

transformers builds these processors from three parts, and the video processor needs torchvision even when
no video is ever passed: without torchvision `AutoProcessor` raises ImportError for the whole folder. Here
the same processor class is built from the image processor and the tokenizer alone; everything an image
needs (placeholder expansion, mm_token_type_ids, the chat template) is still transformers' own code.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.captioning.prompts import read_config


def image_only_processor(folder: Path):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    base = Qwen2_5_VLProcessor if read_config(folder).get("model_type") == "qwen2_5_vl" else Qwen2VLProcessor

    class ImageOnlyProcessor(base):
        # The parent's __init__ insists on a video processor; this one sets what it sets for images and video
        # token ids (videos are never passed, the ids only mark tokens), then skips it.
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyProcessor.from_pretrained(folder, local_files_only=True)
