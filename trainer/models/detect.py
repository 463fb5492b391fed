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

from trainer.errors import ModelFileError
from trainer.models.safe_load import read_header, read_pickle_checkpoint

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
UNET = "model.diffusion_model."
V_HINT = ("SD2 default: most SD2.x checkpoints are 768-v; set model.prediction_type = \"epsilon\" "
          "for 512-base models")


@dataclass
class CheckpointInfo:
    path: Path
    format: str                 # safetensors | ckpt | diffusers
    kind: str                   # base | lora | vae | text_encoder | embedding | diffusers_unet | other
    arch: str = ""              # sd1 | sd2 | sdxl
    prediction_type: str = ""   # epsilon | v_prediction
    prediction_source: str = ""
    size: str = "full"          # full | tiny (LoRA Studio's built-in tiny architecture)
    key_count: int = 0
    metadata: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def config_name(self) -> str:
        base = {"sd1": "sd15", "sd2": "sd2-768v" if self.prediction_type == "v_prediction" else "sd2",
                "sdxl": "sdxl"}[self.arch]
        if self.size == "tiny":
            return {"sd1": "tiny-sd15", "sd2": "tiny-sd2", "sdxl": "tiny-sdxl"}[self.arch]
        return base

    def summary(self) -> str:
        names = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
        tiny = " (tiny test architecture)" if self.size == "tiny" else ""
        return (f"{names.get(self.arch, self.kind)} {self.prediction_type}{tiny}, {self.key_count} tensors, "
                f"{self.format}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        data.update(data.pop("extra"))
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
    info = CheckpointInfo(path=path, format=fmt, kind=_kind(shapes), key_count=len(shapes),
                          metadata=metadata)
    if info.kind == "base":
        _describe_base(info, shapes, metadata)
    elif info.kind == "lora":
        info.extra = describe_lora(shapes, metadata)
        info.arch = info.extra["arch"]
    return info


def _kind(shapes: dict[str, tuple]) -> str:
    keys = list(shapes)
    if any(k.startswith(("lora_unet_", "lora_te", "lycoris_")) or ".lora_down." in k or ".lora_A." in k
           or ".hada_w1_a" in k or ".lokr_w1" in k for k in keys):
        return "lora"
    if any(k.startswith(UNET) for k in keys):
        return "base"
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


def _describe_base(info: CheckpointInfo, shapes: dict[str, tuple], metadata: dict) -> None:
    info.arch = _arch(info.path, shapes)
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight", (320, 4))
    info.size = "tiny" if conv_in[0] < 128 else "full"
    if conv_in[1] != 4:
        info.kind = "inpainting"
        info.extra["unet_in_channels"] = conv_in[1]
    info.prediction_type, info.prediction_source = _prediction(info.arch, shapes, metadata)


def _arch(path: Path, shapes: dict[str, tuple]) -> str:
    keys = shapes.keys()
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd1"
    context = next((s[1] for k, s in shapes.items() if k.startswith(UNET) and k.endswith("attn2.to_k.weight")),
                   None)
    by_width = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
    if context in by_width:
        return by_width[context]
    if context == 1280:
        raise ModelFileError(f"{path} is an SDXL refiner", "LoRAs are trained on SDXL base: pick the base model")
    raise ModelFileError(f"{path} has a UNet of an unknown architecture (cross-attention width {context})",
                         "LoRA Studio trains SD 1.x, SD 2.x and SDXL base models")


def _prediction(arch: str, shapes: dict[str, tuple], metadata: dict) -> tuple[str, str]:
    declared = str(metadata.get("modelspec.prediction_type", "")).lower()
    if declared:
        pred = "v_prediction" if declared.startswith("v") else "epsilon"
        return pred, "metadata modelspec.prediction_type"
    if "v_pred" in shapes:
        return "v_prediction", "v_pred key in the checkpoint"
    if arch == "sd2":
        return "v_prediction", V_HINT
    return "epsilon", f"{arch} default"


def describe_lora(shapes: dict[str, tuple], metadata: dict) -> dict:
    # the rank sits in the first dimension of LoRA's down, LoHa's W1b and a decomposed LoKr's W2b
    downs = [s for k, s in shapes.items()
             if k.endswith((".lora_down.weight", ".lora_A.weight", ".hada_w1_b", ".lokr_w2_b"))]
    modules = {k.rsplit(".", 1)[0] for k in shapes if k.endswith((".lora_down.weight", ".lora_A.weight",
                                                                  ".hada_w1_b", ".lokr_w1", ".lokr_w1_a"))}
    ranks = Counter(s[0] for s in downs)
    prefixes = sorted({m[1] for k in shapes if (m := re.match(r"^(lora_(?:unet|te\d?))_", k))} |
                      {k.split(".")[0] for k in shapes if k.startswith(("unet.", "text_encoder"))})
    version = str(metadata.get("ss_base_model_version", ""))
    if version.startswith("sdxl") or any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in shapes):
        arch = "sdxl"
    elif version.startswith("sd_v2") or metadata.get("ss_v2") == "True":
        arch = "sd2"
    elif version.startswith("sd_v1"):
        arch = "sd1"
    else:
        arch = ""  # kohya files without metadata don't say; key names alone can't tell SD1 from SD2
    return {"rank": ranks.most_common(1)[0][0] if ranks else None, "modules": len(modules),
            "key_prefixes": prefixes, "arch": arch}


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
    index_file = path / "model_index.json"
    if not index_file.exists():
        raise ModelFileError(f"{path} is a folder without model_index.json",
                             "pick a diffusers model folder, or a .safetensors/.ckpt file")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        unet = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
        sched_file = path / "scheduler" / "scheduler_config.json"
        sched = json.loads(sched_file.read_text(encoding="utf-8")) if sched_file.exists() else {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"diffusers folder {path} is incomplete: {exc}",
                             "copy the whole model folder again") from None
    xl = "XL" in index.get("_class_name", "") or unet.get("addition_embed_type") == "text_time"
    arch = "sdxl" if xl else {768: "sd1", 1024: "sd2"}.get(unet.get("cross_attention_dim"), "sd1")
    size = "tiny" if unet.get("block_out_channels", [320])[0] < 128 else "full"
    pred = sched.get("prediction_type", "epsilon")
    return CheckpointInfo(path=path, format="diffusers", kind="base", arch=arch, prediction_type=pred,
                          prediction_source="scheduler config", size=size,
                          key_count=0, metadata={"model_index": index.get("_class_name", "")})
