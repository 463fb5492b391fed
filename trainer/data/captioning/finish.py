"""Post-processing a model's caption before it is written: strip the boilerplate openings vision-language
models like ("The image shows …"), and keep the caption within what CLIP reads, or say that it is not.

Stable Diffusion's text encoders read 75 tokens (77 with start and end); the rest of a caption is cut off in
training (trainer/encode.py) and the dataset health report counts such captions. `clip_limit`:
- "warn": write the caption as it is and say how long it is (the result's note);
- "trim": cut it after the last whole sentence (else the last comma, else word) that fits;
- "off": neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from trainer.data.captioning.base import CaptionerError
from trainer.data.health import CLIP_TOKENS

CLIP_LIMITS = ("warn", "trim", "off")
_SUBJECT = r"(?:the|this) (?:image|picture|photo(?:graph)?|illustration|artwork|drawing|painting|render(?:ing)?|" \
           r"scene|digital (?:art(?:work)?|illustration|painting)|screenshot|frame|shot)"
_VERB = r"(?:(?:clearly |prominently )?(?:shows|depicts|features|presents|displays|captures|portrays|" \
        r"showcases|illustrates|contains|highlights)|is (?:of|an? (?:image|picture|photo(?:graph)?|" \
        r"illustration|depiction) of))"
OPENINGS = [
    re.compile(rf"^{_SUBJECT} {_VERB}\s*:?\s*", re.IGNORECASE),                 # The image shows a cat
    re.compile(rf"^in {_SUBJECT},?\s*(?:(?:we|you) (?:can )?see|there (?:is|are))?\s*", re.IGNORECASE),
    re.compile(r"^(?:this|here) is an? (?:image|picture|photo(?:graph)?|illustration) (?:of|showing)\s+",
               re.IGNORECASE),                                                 # This is a picture of a cat
]


def strip_opening(text: str) -> str:
    """'The image shows a woman on a bench.' -> 'A woman on a bench.'; other captions unchanged."""
    for pattern in OPENINGS:
        rest = pattern.sub("", text, count=1)
        if rest != text and rest.strip():
            rest = rest.strip()
            return rest[0].upper() + rest[1:]
    return text


@dataclass
class Finish:
    strip_openings: bool = True
    clip_limit: str = "warn"

    def __post_init__(self):
        if self.clip_limit not in CLIP_LIMITS:
            raise CaptionerError(f"--clip-limit {self.clip_limit} is not one of {', '.join(CLIP_LIMITS)}",
                                 "use warn (the default), trim or off")

    def model_text(self, text: str) -> str:
        """The model's own caption, before the trigger word and any tags are put in front of it."""
        return strip_opening(text) if self.strip_openings else text

    def fit(self, caption: str) -> tuple[str, str]:
        """The caption to write and a note for the user (empty when there is nothing to say)."""
        if self.clip_limit == "off":
            return caption, ""
        count = self.tokens(caption)
        if count <= CLIP_TOKENS:
            return caption, ""
        if self.clip_limit == "warn":
            return caption, (f"{count} CLIP tokens: Stable Diffusion reads the first {CLIP_TOKENS} "
                             "(--clip-limit trim cuts it, or ask for a shorter caption)")
        return self.trim(caption), f"trimmed from {count} to {CLIP_TOKENS} CLIP tokens or fewer"

    def trim(self, caption: str) -> str:
        for ends in (r"(?<=[.!?])\s", r",\s", r"\s"):  # whole sentences, then phrases, then words
            cuts = [m.start() for m in re.finditer(ends, caption)]
            fitting = [c for c in cuts if self.tokens(caption[:c]) <= CLIP_TOKENS]
            if fitting:
                return caption[:fitting[-1]].rstrip(" ,")
        return caption  # one enormous word: nothing sensible to cut

    def tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False).input_ids)

    @cached_property
    def _tokenizer(self):
        from trainer.models.assets import load_tokenizer

        return load_tokenizer()
