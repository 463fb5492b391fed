"""A generation's settings: the request, `<lora:name:weight>` tags in prompts, and A1111's `parameters` text.

No torch here: the GUI builds requests and reads the settings back from PNGs with it.

A1111 reads `<lora:NAME:TE:UNET>` positionally as text-encoder then UNet multiplier (one number sets both);
we write the named form `<lora:NAME:te=X:unet=Y>` whenever they differ, which A1111 reads the same.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

SAMPLERS = ("euler_a", "dpmpp_2m_karras")
SAMPLER_LABELS = {"euler_a": "Euler a", "dpmpp_2m_karras": "DPM++ 2M Karras"}
LORA_TAG = re.compile(r"<lora:([^:>]+)((?::[^:>]+){0,2})>")


@dataclass
class Request:
    """One generate request (CLI or serve); loras are dicts {"path", "weight", "te_weight"}."""

    prompt: str
    negative: str = ""
    seed: int = -1
    steps: int = 20
    cfg: float = 7.0
    sampler: str = "euler_a"
    width: int | None = None
    height: int | None = None
    count: int = 1
    loras: list[dict] = field(default_factory=list)
    out: str = ""
    id: str = ""
    name: str = ""           # file name stem for the images (default: a running number and the seed)

    @classmethod
    def from_dict(cls, data: dict) -> Request:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known - {"cmd"})
        if unknown:
            raise ValueError(f"unknown request field(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def check(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler '{self.sampler}' is not one of {', '.join(SAMPLERS)}")
        for label, value in (("width", self.width), ("height", self.height)):
            if value is not None and (value < 8 or value % 8):
                raise ValueError(f"{label} {value} must be a multiple of 8")
        if not 1 <= self.steps <= 500:
            raise ValueError(f"steps {self.steps} must be from 1 to 500")
        if not 1 <= self.count <= 1000:
            raise ValueError(f"count {self.count} must be from 1 to 1000")

    def seeds(self) -> list[int]:
        """A1111's batch count: seed, seed+1, ...; -1 draws one random start seed."""
        start = self.seed if self.seed >= 0 else random.randrange(2**32)
        return [(start + i) % 2**32 for i in range(self.count)]


def split_lora_tags(prompt: str) -> tuple[str, list[tuple[str, float, float | None]]]:
    """Remove `<lora:name:w>` tags from a prompt: (clean prompt, [(name, weight, te_weight)])."""
    found = []
    for match in LORA_TAG.finditer(prompt):
        found.append(_tag_weights(match[1].strip(), [a for a in match[2].split(":") if a]))
    clean = re.sub(r"\s{2,}", " ", LORA_TAG.sub("", prompt)).strip(" ,")
    return clean, found


def _tag_weights(name: str, args: list[str]) -> tuple[str, float, float | None]:
    named = dict(a.split("=", 1) for a in args if "=" in a)
    positional = [float(a) for a in args if "=" not in a]
    te = float(named.get("te", positional[0] if positional else 1.0))
    unet = float(named.get("unet", positional[1] if len(positional) > 1 else te))
    return name, unet, (None if te == unet else te)


def lora_tag(name: str, weight: float, te_weight: float | None) -> str:
    if te_weight is None or te_weight == weight:
        return f"<lora:{name}:{_num(weight)}>"
    return f"<lora:{name}:te={_num(te_weight)}:unet={_num(weight)}>"


def parameters_text(req: Request, seed: int, width: int, height: int, model: str,
                    loras: list[tuple[str, float, float | None, str]]) -> str:
    """A1111's PNG `parameters`: prompt (with LoRA tags), negative prompt, then the settings line.
    loras: (name, weight, te_weight, short hash)."""
    tags = " ".join(lora_tag(n, w, t) for n, w, t, _ in loras)
    prompt = f"{req.prompt} {tags}".strip()
    settings = [f"Steps: {req.steps}", f"Sampler: {SAMPLER_LABELS[req.sampler]}", f"CFG scale: {_num(req.cfg)}",
                f"Seed: {seed}", f"Size: {width}x{height}", f"Model: {model}"]
    if loras:
        settings.append('Lora hashes: "' + ", ".join(f"{n}: {h}" for n, _, _, h in loras) + '"')
    settings.append("Version: LoRA Studio")
    return f"{prompt}\nNegative prompt: {req.negative}\n" + ", ".join(settings)


def short_settings(req: Request, seed: int, loras: list[dict]) -> str:
    """One line for a caption under an image in the GUI."""
    names = " ".join(f"{_stem(d['path'])}:{_num(d.get('weight', 1.0))}" for d in loras) or "no LoRA"
    return f"{names} · seed {seed} · {req.steps} steps · CFG {_num(req.cfg)}"


def _stem(path: str) -> str:
    name = re.split(r"[\\/]", path)[-1]
    return name.rsplit(".", 1)[0]


def _num(value: float) -> str:
    return f"{float(value):g}"
