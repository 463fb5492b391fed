"""What is this file? Base model (SD1.x / SD2.x / SDXL, epsilon or v), LoRA, VAE, embedding, or not a
checkpoint at all, read from key names and shapes.

Safetensors files are inspected from their header alone (no tensor is read), so a 7 GB checkpoint is
identified instantly. Legacy pickles are read only through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trainer.models.safe_load import read_header, read_pickle_checkpoint
from trainer.shared.errors import ModelFileError

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}


@dataclass
class CheckpointInfo:
    path: Path
    format: str                 # safetensors | ckpt | diffusers
    kind: str                   # base | lora | vae | text_encoder | embedding | diffusers_unet | other
    arch: str = ""              # the family id (trainer.families): sd1 | sd2 | sdxl | ...
    prediction_type: str = ""   # epsilon | v_prediction | flow
    variant: str = ""           # the family's kind of checkpoint, where it has several (FLUX.1 dev | schnell)
    prediction_source: str = ""
    size: str = "full"          # full | tiny (LoRA Studio's built-in tiny architecture)
    key_count: int = 0
    metadata: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def family(self):
        """The trainer.families.base.Family of a base model or of a LoRA that says which it is for."""
        from trainer.families.registry import get

        return get(self.arch) if self.arch else None

    def config_name(self) -> str:
        return self.family.config_name(self.prediction_type, self.size == "tiny", self.variant)

    def config_folder(self) -> Path:
        """The config folder describing this checkpoint's architecture (what a single file lacks)."""
        return self.family.config_folder(self.config_name())

    def summary(self) -> str:
        label = self.family.label if self.family else self.kind
        tiny = " (tiny test architecture)" if self.size == "tiny" else ""
        return f"{label} {self.prediction_type}{tiny}, {self.key_count} tensors, {self.format}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        data.update(data.pop("extra"))
        if self.kind == "base" and self.family:
            data["family"] = self.family.facts(self.prediction_type, self.variant)  # the GUI's one source of them
        return data


def inspect_file(path: Path) -> dict:
    """Describe any file for `lora-studio inspect`; raises ModelFileError when it can't be read at all."""
    return _inspect(Path(path)).to_dict()


def inspect_base_model(path: Path) -> CheckpointInfo:
    """Like inspect_file, but refuses anything that is not a base SD model, saying what it is instead."""
    info = _inspect(Path(path))
    if info.kind != "base":
        message, hint = _not_base_message(info)
        raise ModelFileError(message, hint)
    return info


def _inspect(path: Path) -> CheckpointInfo:
    from trainer.families.registry import by_demo

    family = by_demo(str(path))
    if family is not None:
        return _inspect_demo(str(path), family)
    if not path.exists():
        raise ModelFileError(f"{path} does not exist", "check the path")
    if path.is_dir():
        return _inspect_diffusers_folder(path)
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path} is empty (0 bytes)", "the download or copy failed: get the file again")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        shapes = {k: tuple(v.shape) for k, v in read_pickle_checkpoint(path).items() if hasattr(v, "shape")}
        return classify(path, "ckpt", shapes, {})
    shapes, metadata = read_header(path)
    return classify(path, "safetensors", shapes, metadata)


def classify(path: Path, fmt: str, shapes: dict[str, tuple], metadata: dict) -> CheckpointInfo:
    from trainer.families import registry

    info = CheckpointInfo(path=path, format=fmt, kind=_kind(shapes), key_count=len(shapes),
                          metadata=metadata)
    if info.kind == "lora":
        info.extra = describe_lora(shapes, metadata)
        info.arch = info.extra["arch"]
        return info
    family = registry.of_checkpoint(path, shapes)
    if family is not None:
        info.kind, info.arch = "base", family.id
        family.describe_checkpoint(info, shapes, metadata)
    return info


def _kind(shapes: dict[str, tuple]) -> str:
    """What a file is when no family claims it as a base model (that question is the families')."""
    keys = list(shapes)
    if any(k.startswith(("lora_unet_", "lora_te", "lycoris_")) or ".lora_down." in k or ".lora_A." in k
           or ".hada_w1_a" in k or ".lokr_w1" in k for k in keys):
        return "lora"
    if any(k.startswith(("down_blocks.", "mid_block.")) for k in keys) and "conv_in.weight" in shapes \
            and "time_embedding.linear_1.weight" in shapes:
        return "diffusers_unet"
    if any(k.startswith(("encoder.down", "decoder.up", "first_stage_model.")) for k in keys):
        return "vae"
    if any(k in ("emb_params", "clip_l", "clip_g") or k.startswith("string_to_param") for k in keys):
        return "embedding"
    if any("text_model.encoder.layers" in k or k.startswith(("cond_stage_model.", "conditioner.")) for k in keys):
        return "text_encoder"
    return "other"


def describe_lora(shapes: dict[str, tuple], metadata: dict) -> dict:
    from trainer.families import registry

    # the rank sits in the first dimension of LoRA's down, LoHa's W1b and a decomposed LoKr's W2b
    downs = [s for k, s in shapes.items()
             if k.endswith((".lora_down.weight", ".lora_A.weight", ".hada_w1_b", ".lokr_w2_b"))]
    modules = {k.rsplit(".", 1)[0] for k in shapes if k.endswith((".lora_down.weight", ".lora_A.weight",
                                                                  ".hada_w1_b", ".lokr_w1", ".lokr_w1_a"))}
    ranks = Counter(s[0] for s in downs)
    prefixes = sorted({m[1] for k in shapes if (m := re.match(r"^(lora_(?:unet|te\d?))_", k))} |
                      {k.split(".")[0] for k in shapes if k.startswith(("unet.", "text_encoder"))})
    family = registry.of_lora(list(shapes), metadata)  # None: kohya files without metadata don't say
    return {"rank": ranks.most_common(1)[0][0] if ranks else None, "modules": len(modules),
            "key_prefixes": prefixes, "arch": family.id if family else ""}


def _not_base_message(info: CheckpointInfo) -> tuple[str, str]:
    pick = "pick the Stable Diffusion checkpoint you want to train on, e.g. v1-5-pruned-emaonly.safetensors"
    what = {
        "lora": ("is a LoRA adapter, not a base model", "pick the checkpoint the LoRA was trained on, e.g. "
                 "v1-5-pruned-emaonly.safetensors"),
        "vae": ("is a VAE on its own, not a full base model", pick),
        "text_encoder": ("holds only a text encoder, not a full base model", pick),
        "embedding": ("is a textual-inversion embedding, not a base model", pick),
        "diffusers_unet": ("is a diffusers-layout UNet on its own", "use the whole diffusers folder "
                           "(with model_index.json), or an A1111-style single-file checkpoint"),
        "inpainting": ("is an inpainting model", "LoRAs for normal generation train on the non-inpainting "
                       "base model"),
    }.get(info.kind, ("is not a Stable Diffusion checkpoint (no UNet weights found)", pick))
    return f"{info.path} {what[0]}", what[1]


def _inspect_diffusers_folder(path: Path) -> CheckpointInfo:
    from trainer.families import registry

    index_file = path / "model_index.json"
    if not index_file.exists():
        raise ModelFileError(f"{path} is a folder without model_index.json",
                             "pick a diffusers model folder, or a .safetensors/.ckpt file")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        denoiser = next(path / name for name in ("unet", "transformer") if (path / name).is_dir())
        denoiser_config = json.loads((denoiser / "config.json").read_text(encoding="utf-8"))
        sched_file = path / "scheduler" / "scheduler_config.json"
        sched = json.loads(sched_file.read_text(encoding="utf-8")) if sched_file.exists() else {}
    except (OSError, json.JSONDecodeError, StopIteration) as exc:
        raise ModelFileError(f"diffusers folder {path} is incomplete: {exc or 'no unet/ or transformer/'}",
                             "copy the whole model folder again") from None
    family = registry.of_folder(path, index, denoiser_config)
    info = CheckpointInfo(path=path, format="diffusers", kind="base", arch=family.id, key_count=0,
                          metadata={"model_index": index.get("_class_name", "")})
    family.describe_folder(info, denoiser_config, sched)
    return info


def _inspect_demo(spec: str, family) -> CheckpointInfo:
    """A family's built-in tiny model (demo:sd15, ...): the GUI asks about it like about any file."""
    folder = family.config_folder(family.config_name("epsilon", tiny=True))
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    info = CheckpointInfo(path=Path(spec), format="demo", kind="base", arch=family.id, size="tiny",
                          prediction_type=family.fixed_prediction or config.get("prediction_type", "epsilon"),
                          prediction_source="built-in tiny model")
    info.variant = family.variant_of_config(info.config_name())
    return info
