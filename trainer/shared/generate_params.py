"""A generation's settings: the request, `<lora:name:weight>` tags in prompts, and A1111's `parameters` text.

No torch here: the GUI builds requests and reads the settings back from PNGs with it.

A1111 reads `<lora:NAME:TE:UNET>` positionally as text-encoder then UNet multiplier (one number sets both);
we write the named form `<lora:NAME:te=X:unet=Y>` whenever they differ, which A1111 reads the same.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field, replace

from trainer.shared.paths import name_problem

SAMPLERS = ("euler_a", "dpmpp_2m_karras")
SAMPLER_LABELS = {"euler_a": "Euler a", "dpmpp_2m_karras": "DPM++ 2M Karras"}
LORA_TAG = re.compile(r"<lora:([^:>]+)((?::[^:>]+){0,2})>")
# Checked before anything is allocated: the latents, the activations and the VAE decode of one image grow with
# its area (a 100000 px side asked for 40 GB); 4096 is the training previews' own limit (sampling.width).
MAX_SIDE = 4096
MAX_COUNT, MAX_STEPS, MAX_CFG = 1000, 500, 100.0
_NUMBER = (int, float)
FIELD_TYPES = {"prompt": str, "negative": str, "seed": int, "steps": (int, type(None)),
               "cfg": (*_NUMBER, type(None)), "sampler": str,
               "width": (int, type(None)), "height": (int, type(None)), "count": int, "loras": list, "out": str,
               "id": (str, int), "name": str}


@dataclass
class Request:
    """One generate request (CLI or serve); loras are dicts {"path", "weight", "te_weight"}."""

    prompt: str
    negative: str = ""
    seed: int = -1
    steps: int | None = None  # None: the model's own (its family's preview defaults: SD 20, schnell 4, ...)
    cfg: float | None = None   # None: the model's own (SD 7, FLUX.1 dev 3.5, distilled models none)
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
        for key, value in data.items():
            kinds = FIELD_TYPES.get(key)
            if kinds and (not isinstance(value, kinds) or isinstance(value, bool)):
                raise ValueError(f"request field {key!r} is {value!r}, not a {_kind_name(kinds)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def check(self) -> None:
        """Every value in its range, before anything is loaded or allocated."""
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler '{self.sampler}' is not one of {', '.join(SAMPLERS)}")
        for label, value in (("width", self.width), ("height", self.height)):
            if value is not None and not (8 <= value <= MAX_SIDE and value % 8 == 0):
                raise ValueError(f"{label} {value} must be a multiple of 8 from 8 to {MAX_SIDE}")
        for label, value, top in (("steps", self.steps, MAX_STEPS), ("count", self.count, MAX_COUNT)):
            if value is not None and not 1 <= value <= top:
                raise ValueError(f"{label} {value} must be from 1 to {top}")
        if self.cfg is not None and not (math.isfinite(self.cfg) and 0 <= self.cfg <= MAX_CFG):
            raise ValueError(f"cfg {self.cfg} must be from 0 to {MAX_CFG:g}")
        if not -1 <= self.seed < 2**32:
            raise ValueError(f"seed {self.seed} must be -1 (random) or from 0 to {2**32 - 1}")
        if self.name and (problem := name_problem(self.name)):
            raise ValueError(f"name {self.name!r} cannot name the image files: {problem}")
        for item in self.loras:
            lora_problem(item)

    def with_model_defaults(self, steps: int, cfg: float) -> Request:
        """This request with the steps and CFG it left unset taken from the model's own."""
        return replace(self, steps=self.steps if self.steps is not None else steps,
                       cfg=self.cfg if self.cfg is not None else cfg)

    def seeds(self) -> list[int]:
        """A1111's batch count: seed, seed+1, ...; -1 draws one random start seed."""
        start = self.seed if self.seed >= 0 else random.randrange(2**32)
        return [(start + i) % 2**32 for i in range(self.count)]


def _kind_name(kinds) -> str:
    names = [k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)) if k is not type(None)]
    return " or ".join("number" if n == "float" else n for n in names)


def lora_problem(item: object) -> None:
    """A LoRA entry of a request, {"path": FILE, "weight": W, "te_weight": W}: ValueError when it is not one."""
    if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item["path"]:
        raise ValueError(f'bad LoRA entry {str(item)[:200]}: give {{"path": FILE, "weight": 1.0}}')
    unknown = sorted(set(item) - {"path", "weight", "te_weight"})
    if unknown:
        raise ValueError(f"LoRA entry {item['path']!r} has unknown field(s) {unknown}")
    for key in ("weight", "te_weight"):
        value = item.get(key)
        if value is not None and not finite_weight(value):
            raise ValueError(f"LoRA entry {item['path']!r}: {key} {value!r} is not a finite number")


def finite_weight(value: object) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def split_lora_tags(prompt: str) -> tuple[str, list[tuple[str, float, float | None]]]:
    """Remove `<lora:name:w>` tags from a prompt: (clean prompt, [(name, weight, te_weight)])."""
    found = []
    for match in LORA_TAG.finditer(prompt):
        found.append(_tag_weights(match[1].strip(), [a for a in match[2].split(":") if a]))
    clean = re.sub(r"\s{2,}", " ", LORA_TAG.sub("", prompt)).strip(" ,")
    return clean, found


def _tag_weights(name: str, args: list[str]) -> tuple[str, float, float | None]:
    try:
        named = dict(a.split("=", 1) for a in args if "=" in a)
        positional = [float(a) for a in args if "=" not in a]
        te = float(named.get("te", positional[0] if positional else 1.0))
        unet = float(named.get("unet", positional[1] if len(positional) > 1 else te))
    except ValueError:
        raise ValueError(f"<lora:{name}{''.join(':' + a for a in args)}>: the weights must be numbers, "
                         "as in <lora:NAME:0.8>") from None
    if not (math.isfinite(te) and math.isfinite(unet)):
        raise ValueError(f"<lora:{name}:…>: the weights must be finite numbers")
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
