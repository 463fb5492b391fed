"""Which vision-language model a folder holds (from its config.json) and what to ask it by default.

Florence-2 is not asked in words: it takes one of its task tokens, one per caption length. Qwen2/2.5-VL and
the LLaVA family take an instruction through their chat template. The default prompts ask for a training
caption: what is there, composition, lighting and style, with no "The image shows" preamble (which
finish.py strips anyway when a model adds it).
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.data.captioning.base import CaptionerError

FLORENCE, QWEN, LLAVA, OTHER = "florence-2", "qwen-vl", "llava", "vision-language"
# config.json's model_type -> kind. Every one of these loads with AutoModelForImageTextToText. Any other
# folder with a processor chat template (Gemma 3, SmolVLM, Qwen3-VL, ...) is tried the same way as OTHER:
# the image-and-text chat message is transformers' common format, but those are not tested here.
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
VLM_TYPES = {
    "florence2": FLORENCE,
    "qwen2_vl": QWEN, "qwen2_5_vl": QWEN,
    "llava": LLAVA, "llava_next": LLAVA, "llava_onevision": LLAVA,
}
LENGTHS = ("short", "paragraph", "long")
FLORENCE_TASKS = {"short": "<CAPTION>", "paragraph": "<DETAILED_CAPTION>", "long": "<MORE_DETAILED_CAPTION>"}
INSTRUCTIONS = {
    "short": "Describe this image in one sentence for a training caption. Start with the subject; no "
             "preamble.",
    "paragraph": "Describe this image for a training caption in one paragraph: the subject, what it is doing, "
                 "the setting, composition, lighting and style. Start with the subject; no preamble.",
    "long": "Describe this image in detail for a training caption, in one long paragraph: every visible "
            "subject and object, clothing, pose, background, composition, camera angle, lighting, colours "
            "and art style. Start with the subject; no preamble.",
}
# Tokens a caption of each length needs, a little over what the models write: the cap only stops a looping
# model (the folder's own generation settings do not know we want a caption).
MAX_TOKENS = {"short": 60, "paragraph": 160, "long": 300}


def read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CaptionerError(f"{folder / 'config.json'} cannot be read: {exc}",
                             "the model folder is incomplete; copy it again") from None
    return config if isinstance(config, dict) else {}


def vlm_kind(folder: Path) -> str:
    """FLORENCE, QWEN or LLAVA for a folder of one of those, OTHER for another model with a chat template;
    "" for any other config.json (BLIP, ...)."""
    kind = VLM_TYPES.get(read_config(folder).get("model_type", ""), "")
    if not kind and any((folder / name).is_file() for name in CHAT_TEMPLATE_FILES):
        return OTHER
    return kind


def default_prompt(kind: str, length: str = "paragraph") -> str:
    if length not in LENGTHS:
        raise CaptionerError(f"caption length {length!r} is not one of {', '.join(LENGTHS)}",
                             "use --length short, paragraph or long")
    return FLORENCE_TASKS[length] if kind == FLORENCE else INSTRUCTIONS[length]


def check_florence_prompt(prompt: str) -> None:
    """Florence-2 understands only its task tokens: a sentence would be read as an unknown task."""
    if prompt not in FLORENCE_TASKS.values():
        raise CaptionerError(f"Florence-2 takes a task token, not the prompt {prompt!r}",
                             f"use --prompt {' / '.join(FLORENCE_TASKS.values())}, or leave --prompt out "
                             "and pick --length")
