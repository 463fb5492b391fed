"""Per-prompt preview settings in kohya's sample-prompt syntax, so prompt files carry over from sd-scripts:

    a cat on a sofa --n blurry, lowres --w 768 --h 512 --s 28 --l 6.5 --d 7

--n negative prompt, --w / --h size in pixels, --s sampler steps, --l CFG scale, --d seed. Anything not given
comes from the [sampling] section, and steps and CFG left at 0 there from the model (`own`: its family's
preview defaults, trainer.families.base.Family.preview_defaults). Torch-free: the GUI splits prompts into fields with the same code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trainer.shared.errors import ConfigError

OPTION = re.compile(r"\s--(n|w|h|s|l|d)(?:\s+|$)")
NUMERIC = {"w": int, "h": int, "s": int, "l": float, "d": int}


@dataclass
class PromptSettings:
    prompt: str
    negative: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int


def split_prompt(text: str) -> tuple[str, dict[str, str]]:
    """'a cat --w 768 --n blurry' -> ('a cat', {'w': '768', 'n': 'blurry'}): the GUI's fields."""
    parts = OPTION.split(" " + text)
    return parts[0].strip(), {flag: value.strip() for flag, value in zip(parts[1::2], parts[2::2])}


def join_prompt(prompt: str, options: dict[str, str]) -> str:
    """The inverse of split_prompt; empty options are left out (they take the [sampling] defaults)."""
    flags = [f"--{flag} {value.strip()}" for flag, value in options.items() if str(value).strip()]
    return " ".join([prompt.strip(), *flags])


def parse_prompt(text: str, sampling, resolution: int, index: int,
                 own: tuple[int, float] = (20, 7.0)) -> PromptSettings:
    """`sampling` is trainer.shared.config.SamplingConfig; the default seed of prompt `index` is sampling.seed + index;
    `own`: the model's (steps, CFG), for sampling.steps / guidance_scale left at 0."""
    prompt, values = split_prompt(text)
    values["prompt"] = prompt
    try:
        numbers = {flag: NUMERIC[flag](values[flag]) for flag in NUMERIC if flag in values}
    except ValueError:
        raise ConfigError(f"config key 'sampling.prompts': {text!r} has an option that is not a number",
                          "write e.g. --w 768 --h 512 --s 28 --l 7 --d 42") from None
    return PromptSettings(
        prompt=values["prompt"], negative=values.get("n", sampling.negative_prompt),
        width=_multiple_of_8(numbers.get("w", sampling.width or resolution)),
        height=_multiple_of_8(numbers.get("h", sampling.height or resolution)),
        steps=max(1, numbers.get("s", sampling.steps or own[0])),
        guidance_scale=numbers.get("l", sampling.guidance_scale or own[1]),
        seed=numbers.get("d", sampling.seed + index))


def _multiple_of_8(pixels: int) -> int:
    return max(64, pixels - pixels % 8)  # the VAE works in 8-pixel cells (kohya rounds down alike)
