"""Check that every tensor of a kohya-layout adapter lands on a real module of its base architecture, and
that every UI takes the file.

The expected module names come from diffusers' model classes built with the architecture's real config on
the meta device (no memory, no weights), named by the UIs' rules (`trainer.export.kohya`). A tensor whose
module does not exist, or whose shape does not fit, would be silently ignored by A1111/ComfyUI: the classic
"my LoRA does nothing". A UI can also refuse a whole file before applying anything: InvokeAI installs an SD
LoRA only when its probe can tell the base model (`trainer.export.invokeai`). Such a file is not called done.

For the DiT families each UI reads only some layouts (FLUX.1 kohya or diffusers names, Z-Image's split or
fused q/k/v, klein's BFL names with or without `.alpha`): the family's `ui_verdicts` says, for any file, which
UIs load it whole, which drop some of its layers silently and which refuse it (trainer.export.ui_rules).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

from trainer.export import ui_rules
from trainer.export.invokeai import probe_problem
from trainer.export.ui_rules import REFUSES, SUFFIX, UI_NAMES  # noqa: F401 (UI_NAMES: the exporter's names)


@dataclass
class Report:
    config: str
    applied: int = 0
    ignored: list[str] = field(default_factory=list)   # "key: reason"
    modules: int = 0
    # UI id (trainer.export.ui_rules.UI_NAMES) -> (verdict, why), in the order the summary names them
    uis: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def refused(self) -> dict[str, str]:
        """{UI: why} of the UIs that refuse the whole file."""
        return self._with(ui_rules.REFUSES)

    @property
    def drops(self) -> dict[str, str]:
        """{UI: which layers and why} of the UIs that load the file but silently leave layers out."""
        return self._with(ui_rules.DROPS)

    def _with(self, verdict: str) -> dict[str, str]:
        return {ui: why for ui, (found, why) in self.uis.items() if found == verdict}

    @property
    def applies(self) -> bool:
        """Every tensor lands on a module (the UIs that take the file apply all of it)."""
        return not self.ignored and self.applied > 0

    @property
    def ok(self) -> bool:
        return self.applies and not self.refused and not self.drops

    def summary(self) -> str:
        head = f"{self.applied} tensors apply to {self.modules} modules of {self.config}"
        head += "; none ignored" if not self.ignored else f"; {len(self.ignored)} IGNORED, e.g. {self.ignored[0]}"
        return head + (f"; {ui_rules.summary(self.uis)}" if self.uis else "")


@dataclass(frozen=True)
class Target:
    component: str      # unet | text_encoder | text_encoder_2
    module: str         # diffusers / transformers module path
    kind: str           # Linear | Conv2d
    shape: tuple        # the base weight's shape


@functools.lru_cache(maxsize=8)
def module_table(config_name: str, arch: str) -> dict[str, Target]:
    """kohya module name -> the Linear/Conv2d it applies to, for every such layer of the architecture (the
    family's components built on the meta device from its config folder, named by its rules)."""
    from trainer.families.registry import get

    family = get(arch)
    components = family.meta_components(family.config_folder(config_name))
    return {key: Target(*target) for key, target in family.kohya_modules(components).items()}


def expected_modules(config_name: str, arch: str) -> dict[str, tuple[str, tuple]]:
    return {k: (t.kind, t.shape) for k, t in module_table(config_name, arch).items()}


def verify_tensors(shapes: dict[str, tuple], config_name: str, arch: str, metadata: dict | None = None) -> Report:
    from trainer.families.registry import get

    modules = expected_modules(config_name, arch)
    report = Report(config=config_name)
    grouped: dict[str, dict[str, tuple]] = {}
    for key, shape in shapes.items():
        match = SUFFIX.match(key)
        if not match:
            report.ignored.append(f"{key}: not a LoRA tensor name")
        elif match["module"] not in modules:
            report.ignored.append(f"{key}: no module '{match['module']}' in {config_name}")
        else:
            part = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}.get(match["part"],
                                                                                              match["part"])
            grouped.setdefault(match["module"], {})[part] = shape
    for module, parts in grouped.items():
        problems = {part: _shape_problem(part, shape, modules[module], parts) for part, shape in parts.items()}
        report.ignored += [f"{module}.{part}: {problem}" for part, problem in problems.items() if problem]
        report.applied += sum(1 for problem in problems.values() if not problem)
        report.modules += any(not problem for problem in problems.values())
    report.uis = get(arch).ui_verdicts(shapes, metadata or {})
    refusal = _invokeai_refusal(shapes, config_name, arch)
    if refusal:
        report.uis["invokeai"] = (REFUSES, refusal)
    return report


def _invokeai_refusal(shapes: dict[str, tuple], config_name: str, arch: str) -> str:
    from trainer.families.registry import get

    base, width = get(arch).invokeai_base, context_dim(config_name, arch)
    if not base or width is None:
        return ""  # InvokeAI tells this family's files by other means than the SD probe
    return probe_problem(shapes, base, width)


def context_dim(config_name: str, arch: str) -> int | None:
    """The width of what the denoiser's cross-attention reads (the text embedding): the input of its to_k."""
    table = module_table(config_name, arch)
    return next((t.shape[1] for name, t in table.items() if name.endswith("_attn2_to_k")), None)


def _shape_problem(part: str, shape: tuple, expected: tuple[str, tuple], parts: dict[str, tuple]) -> str:
    kind, weight = expected
    out_features, in_features = weight[0], weight[1]
    if part == "alpha":
        return "" if len(shape) == 0 or shape == (1,) else f"alpha should be a scalar, is {shape}"
    if part == "dora_scale":
        return "" if shape and shape[0] == out_features else f"dora_scale {shape} vs {out_features} outputs"
    if part.startswith("hada_"):
        return _loha_problem(part, shape, weight, "hada_t1" in parts)
    if part.startswith("lokr_"):
        return _lokr_problem(parts, weight)
    if part == "lora_down.weight":
        ok = shape[1] == in_features and (kind == "Linear" or shape[2:] in (weight[2:], (1, 1)))
        return "" if ok else f"lora_down {shape} does not fit weight {weight}"
    ok = shape[0] == out_features
    return "" if ok else f"lora_up {shape} does not fit weight {weight}"


def _loha_problem(part: str, shape: tuple, weight: tuple, tucker: bool) -> str:
    """LoHa: (W1a·W1b) ⊙ (W2a·W2b) reshaped to the weight; with Tucker (conv) W·a is (r, out), W·b (r, in)."""
    if part in ("hada_t1", "hada_t2"):
        ok = tuple(shape[2:]) == tuple(weight[2:])
    elif part.endswith("_a"):
        ok = (shape[1] if tucker else shape[0]) == weight[0]
    else:
        ok = shape[1] == (weight[1] if tucker else math.prod(weight[1:]))
    return "" if ok else f"{part} {shape} does not fit weight {weight}"


def _lokr_problem(parts: dict[str, tuple], weight: tuple) -> str:
    """LoKr: W1 ⊗ W2 must have the weight's shape (flattened past the output dimension)."""
    try:
        w1 = parts["lokr_w1"] if "lokr_w1" in parts else (parts["lokr_w1_a"][0], parts["lokr_w1_b"][1])
        if "lokr_w2" in parts:
            w2 = parts["lokr_w2"]
        elif "lokr_t2" in parts:
            w2 = (parts["lokr_w2_a"][1], parts["lokr_w2_b"][1], *parts["lokr_t2"][2:])
        else:
            w2 = (parts["lokr_w2_a"][0], parts["lokr_w2_b"][1])
    except KeyError as missing:
        return f"LoKr factor {missing} is missing"
    ok = w1[0] * w2[0] == weight[0] and w1[1] * math.prod(w2[1:]) == math.prod(weight[1:])
    return "" if ok else f"LoKr {tuple(w1)} ⊗ {tuple(w2)} does not fit weight {weight}"


def verify_file(path: Path, config_name: str | None = None) -> Report:
    from trainer.families.registry import by_config
    from trainer.models.safe_load import read_header

    shapes, metadata = read_header(Path(path))
    config_name = config_name or base_config_of(metadata, list(shapes))
    return verify_tensors(shapes, config_name, by_config(config_name).id, metadata)


def base_config_of(metadata: dict, keys: list[str] | None = None) -> str:
    """The assets/configs folder an adapter was trained against: ours from its metadata, else the family
    the file says it is for (its version keys, or keys only one family has), else SD 1.x as kohya assumes."""
    from trainer.families.registry import get, of_lora

    if metadata.get("lora_studio_base_config"):
        return metadata["lora_studio_base_config"]
    family = of_lora(keys or [], metadata) or get("sd1")
    return family.config_from_metadata(metadata)
