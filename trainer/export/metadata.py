"""Adapter metadata: kohya's `ss_*` keys and Stability's `modelspec.*` keys.

A1111 files a LoRA under a model version by `ss_base_model_version` (an `sdxl_` prefix marks SDXL) and
`ss_v2`, which the family writes (trainer.families: `metadata()`); its extra-networks card shows `ss_tag_frequency`, `ss_output_name` and friends. Safetensors
metadata values must be strings, so numbers and tables are written as text / JSON.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class TrainingFacts:
    """What the metadata describes; filled in by the loop."""

    arch: str
    prediction_type: str
    rank: int
    alpha: float
    targets: str
    dora: bool
    output_name: str
    base_model: str
    resolution: int
    steps: int
    epoch: int
    lr: float
    text_encoder_lr: float
    train_text_encoder: bool
    num_train_images: int
    started_at: float
    seed: int
    optimizer: str
    lr_scheduler: str
    batch_size: int
    trigger_phrase: str = ""
    tag_frequency: dict = field(default_factory=dict)
    config_toml: str = ""
    thumbnail: str = ""
    base_config: str = ""
    algorithm: str = "lora"
    clip_skip: int = 1
    conv_rank: int = 0     # the values a UI uses (rsLoRA's alphas already adjusted): alpha/rank is the scale
    conv_alpha: float = 0.0
    rslora: bool = False
    zero_terminal_snr: bool = False
    training_adapter: str = ""  # file name of model.training_adapter: applied while training, not in the file


def build_metadata(f: TrainingFacts) -> dict[str, str]:
    from trainer.families.registry import get

    family = get(f.arch)
    by_family = family.metadata(f.prediction_type, family.variant_of_config(f.base_config))
    network_args = {"targets": f.targets}
    if f.targets == "full":
        network_args.update(conv_dim=str(f.conv_rank or f.rank), conv_alpha=str(f.conv_alpha or f.alpha))
    if f.rslora:
        network_args["rs_lora"] = "True"  # LyCORIS' name; the alphas in the file already include it
    if f.dora:
        network_args["dora_wd"] = "True"
    lycoris = f.algorithm in ("loha", "lokr")
    if lycoris:
        network_args["algo"] = f.algorithm  # LyCORIS' own key, shown by A1111's and civitai's LoRA cards
    elif f.algorithm != "lora":
        network_args["trained_as"] = f.algorithm  # AdaLoRA: a plain LoRA file of per-module ranks
    meta = {
        "ss_base_model_version": by_family["ss_base_model_version"],
        "ss_v2": by_family.get("ss_v2", "False"),
        "ss_network_module": "lycoris.kohya" if lycoris else "networks.lora",
        "ss_network_dim": str(f.rank),
        "ss_network_alpha": _num(f.alpha),
        "ss_network_args": json.dumps(network_args),
        "ss_output_name": f.output_name,
        "ss_sd_model_name": f.base_model,
        "ss_tag_frequency": json.dumps(f.tag_frequency, ensure_ascii=False),
        "ss_num_train_images": str(f.num_train_images),
        "ss_resolution": f"({f.resolution}, {f.resolution})",
        "ss_steps": str(f.steps),
        "ss_epoch": str(f.epoch),
        "ss_learning_rate": _num(f.lr),
        "ss_unet_lr": _num(f.lr),
        "ss_text_encoder_lr": _num(f.text_encoder_lr if f.train_text_encoder else 0.0),
        "ss_network_train_unet_only": str(not f.train_text_encoder),
        "ss_training_started_at": _num(f.started_at),
        "ss_training_finished_at": _num(time.time()),
        "ss_seed": str(f.seed),
        "ss_clip_skip": str(f.clip_skip),
        "ss_zero_terminal_snr": str(f.zero_terminal_snr),
        "ss_optimizer": f.optimizer,
        "ss_lr_scheduler": f.lr_scheduler,
        "ss_batch_size_per_device": str(f.batch_size),
        "ss_training_comment": "trained with LoRA Studio",
        "lora_studio_config": f.config_toml,
        "lora_studio_base_config": f.base_config,
    }
    if f.training_adapter:  # its name only, so a user can tell what the LoRA was trained against
        meta["lora_studio_training_adapter"] = f.training_adapter
    meta.update(_modelspec(f, by_family["modelspec.architecture"]))
    meta.update({k: v for k, v in by_family.items() if k not in meta and not k.startswith("modelspec.")})
    return meta


def _modelspec(f: TrainingFacts, architecture: str) -> dict[str, str]:
    spec = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{architecture}/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": f.output_name,
        "modelspec.resolution": f"{f.resolution}x{f.resolution}",
        "modelspec.date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "modelspec.prediction_type": {"v_prediction": "v", "flow": "flow"}.get(f.prediction_type, "epsilon"),
    }
    if f.trigger_phrase:
        spec["modelspec.trigger_phrase"] = f.trigger_phrase
    if f.thumbnail:
        spec["modelspec.thumbnail"] = f.thumbnail
    return spec


def _num(value: float) -> str:
    return repr(float(value))
