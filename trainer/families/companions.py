"""A DiT's other files (VAE, text encoders) found the way ComfyUI users keep them: a config key first, then
beside the transformer, then in ComfyUI's models/<folder> next to the transformer's models/diffusion_models.

Each family passes its own roles table: {role: Role(config key, usual file names, ComfyUI folders)}. A role
with an `embedded` key prefix is also found inside the model file itself when it is an all-in-one checkpoint
(ComfyUI's FLUX.1 checkpoints hold the AE under `vae.` and the text encoders under `text_encoders.…`); the
role's file is then the model's own path, and the loader reads that prefix of it (TensorFile.within).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.shared.errors import ModelFileError


@dataclass(frozen=True)
class Role:
    key: str                       # the config key that names the file (model.vae, model.text_encoder, ...)
    names: tuple[str, ...]         # usual file names, the one people download first
    folders: tuple[str, ...]       # ComfyUI folders relative to models/ (the first is the one named to people)
    embedded: str = ""             # key prefix of this component inside an all-in-one checkpoint


def companions(model: Path, given: dict, roles: dict[str, Role]) -> tuple[dict[str, Path], list[str]]:
    """({role: file} found, [what is missing, said for people])."""
    found, missing = {}, []
    inside = _embedded(model, roles)
    for role, spec in roles.items():
        if role in inside and not given.get(role):
            found[role] = model
            continue
        if given.get(role):
            path = Path(given[role]).expanduser()
            if not path.is_file():
                raise ModelFileError(f"config key '{spec.key}' names {path}, which does not exist", "check the path")
            found[role] = path
            continue
        places = [model.parent, *(model.parent.parent / f for f in spec.folders)]
        hit = next((p / n for n in spec.names for p in places if (p / n).is_file()), None)
        if hit is None:
            missing.append(f"{spec.names[0]} ({spec.key}; ComfyUI keeps it in models/{spec.folders[0]})")
        else:
            found[role] = hit
    return found, missing


def _embedded(model: Path, roles: dict[str, Role]) -> set[str]:
    """The roles whose component the model file holds itself (an all-in-one checkpoint)."""
    prefixes = {role: spec.embedded for role, spec in roles.items() if spec.embedded}
    if not prefixes or model.suffix.lower() != ".safetensors" or not model.is_file():
        return set()
    from trainer.models.safe_load import read_tensor_index

    keys = read_tensor_index(model)
    return {role for role, prefix in prefixes.items() if any(k.startswith(prefix) for k in keys)}


def find_files(model: Path, given: dict, roles: dict[str, Role], label: str) -> dict[str, Path]:
    """{role: file}; the missing ones are one error naming each, before anything loads."""
    found, missing = companions(model, given, roles)
    if missing:
        raise ModelFileError(f"{model} is a {label} transformer; its other files were not found beside it or in "
                             f"ComfyUI's folders: {', '.join(missing)}",
                             "put them beside the transformer, or name each with its config key")
    return found
