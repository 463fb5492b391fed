"""Families by id, and the questions asked of all of them at once: which family is this checkpoint, this
diffusers folder, this LoRA file, this demo name.

The built-in families register when first asked. A family from elsewhere registers with `register()` (a
test's toy family does), or by naming its module in LORA_STUDIO_FAMILIES (comma-separated module names,
imported at the first question, in every engine process: how a family reaches `train` run as a child).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from trainer.families.base import Family
from trainer.shared.errors import ModelFileError, UserError

BUILT_IN = ("trainer.families.sd", "trainer.families.sdxl", "trainer.families.flux1", "trainer.families.zimage",
            "trainer.families.flux2_klein")
_FAMILIES: dict[str, Family] = {}
_loaded = False


def register(family: Family) -> Family:
    """Add (or replace) a family under its id; returns it, so a module can write FAMILY = register(...)."""
    _FAMILIES[family.id] = family
    return family


def unregister(family_id: str) -> None:
    _FAMILIES.pop(family_id, None)


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    extra = [m.strip() for m in os.environ.get("LORA_STUDIO_FAMILIES", "").split(",") if m.strip()]
    for module in (*BUILT_IN, *extra):
        importlib.import_module(module)


def families() -> list[Family]:
    _ensure_loaded()
    return list(_FAMILIES.values())


def get(family_id: str) -> Family:
    _ensure_loaded()
    if family_id not in _FAMILIES:
        known = ", ".join(_FAMILIES)
        raise UserError(f"unknown model family '{family_id}'", f"one of: {known}")
    return _FAMILIES[family_id]


def by_demo(spec: str) -> Family | None:
    """The family whose tiny model `spec` (demo:sd15, demo:sdxl, ...) names, or None."""
    return next((f for f in families() if f.demo and f.demo == spec), None)


def demo_specs() -> list[str]:
    return [f.demo for f in families() if f.demo]


def by_config(config_name: str) -> Family:
    """The family that owns an assets/configs folder name (sd15, sd2-768v, tiny-sdxl, ...)."""
    for family in families():
        if config_name in family.config_names():
            return family
    raise UserError(f"no model family knows the config '{config_name}'",
                    "the adapter names a base config this version of LoRA Studio does not have")


def find(name: str) -> Family:
    """A family by its id or by one of its config folder names (sd15, tiny-sdxl): tests and benches say
    "sd15" where the family is sd1."""
    _ensure_loaded()
    return _FAMILIES[name] if name in _FAMILIES else by_config(name)


def of_checkpoint(path: Path, shapes: dict[str, tuple]) -> Family | None:
    """The family a single file belongs to; None when it is not a base model at all. A file that looks like
    a family's kind of model but that no family takes (an SDXL refiner) is refused by that family."""
    for family in families():
        if family.claims_checkpoint(shapes):
            return family
    for family in families():
        family.refuse_unclaimed(path, shapes)
    return None


def of_folder(path: Path, index: dict, denoiser_config: dict) -> Family:
    for family in families():
        if family.claims_folder(index, denoiser_config):
            return family
    raise ModelFileError(f"diffusers folder {path} holds a {index.get('_class_name', 'pipeline')} that no model "
                         "family of LoRA Studio trains", "pick a model of a family listed by `lora-studio system`")


def of_lora(keys: list[str], metadata: dict) -> Family | None:
    """The family a LoRA file says it is for, or None when neither its metadata nor its keys tell."""
    return next((f for f in families() if f.claims_lora(keys, metadata)), None)


def labels() -> str:
    return ", ".join(f.label for f in families())
