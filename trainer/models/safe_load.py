"""Reading checkpoint files without trusting them.

Safetensors: the header is parsed by hand first (8-byte length + JSON), so a truncated download, an HTML
error page saved as .safetensors, or a zero-byte file gets a message that says so, instead of a cryptic
error from deep inside a loader. Pickles (.ckpt/.pt/.pth/.bin) are loaded with `weights_only=True` only:
a pickle that wants to run code is refused, never executed.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

from trainer.shared.errors import ModelFileError

MAX_HEADER = 100 * 1024 * 1024
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


def read_header(path: Path) -> tuple[dict[str, tuple], dict[str, str]]:
    """Return ({tensor name: shape}, metadata) of a .safetensors file, checking that it is complete."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{path} is too short to be a model file ({size} bytes)",
                                 "the download or copy failed: get the file again")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER, size - 8) or length < 2:
            raise _not_safetensors(path, head)
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _not_safetensors(path, head) from None
    metadata = header.pop("__metadata__", None) or {}
    shapes, end = {}, 0
    for name, entry in header.items():
        shapes[name] = tuple(entry["shape"])
        end = max(end, entry["data_offsets"][1])
    if 8 + length + end > size:
        raise ModelFileError(f"{path} is truncated: it holds {size:,} bytes of {8 + length + end:,}",
                             "the download or copy stopped early: get the file again")
    return shapes, {str(k): str(v) for k, v in metadata.items()}


def read_tensor_index(path: Path) -> dict[str, tuple[str, list, int, int]]:
    """{tensor name: (dtype, shape, start, end)} of a .safetensors file, offsets relative to its data."""
    read_header(path)  # complete and well-formed, or a message that says what the file is
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length).decode("utf-8"))
    header.pop("__metadata__", None)
    return {name: (e["dtype"], e["shape"], *e["data_offsets"]) for name, e in header.items()}


def _not_safetensors(path: Path, head: bytes) -> ModelFileError:
    text = head.lstrip().lower()
    if text.startswith((b"<!doc", b"<html", b"<?xml", b"{\"", b"{'")):
        return ModelFileError(f"{path} is a web page or text, not a model file",
                              "a failed browser download saves the site's error page: download it again "
                              "(on civitai/Hugging Face you may need to be logged in)")
    if head.startswith(b"PK"):
        return ModelFileError(f"{path} is a zip/pickle checkpoint named .safetensors",
                              "rename it to .ckpt so it is read as a legacy checkpoint")
    return ModelFileError(f"{path} is not a safetensors file (no valid header)",
                          "the file is damaged or of another kind: get the model file again")


def read_pickle_checkpoint(path: Path) -> dict:
    """Tensors of a legacy .ckpt/.pt file, loaded with weights_only=True; unwraps `state_dict`."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise ModelFileError(
                f"{path} is a pickle that wants to run code when loaded; LoRA Studio will not load it",
                "get a .safetensors version of this model, or convert it with a tool you trust") from None
        raise _damaged(path, exc) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise _damaged(path, exc) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} holds a {type(data).__name__}, not a model's weights",
                             "pick a Stable Diffusion checkpoint")
    return data


def _damaged(path: Path, exc: Exception) -> ModelFileError:
    return ModelFileError(f"{path} is truncated or not a PyTorch checkpoint ({type(exc).__name__}: "
                          f"{str(exc)[:120]})", "the download or copy failed: get the file again")


def read_lora_file(path: Path) -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a LoRA .safetensors file: header checked, every tensor finite. Every command
    that reads a LoRA (generate, serve, merge, combine, export, resize, lora.init_from) reads it here: a LoRA
    holding NaN or infinity would bake NaN into a checkpoint or draw black images, all with exit code 0."""
    from safetensors.torch import load_file

    _, metadata = read_header(path)
    tensors = load_file(str(path))
    refuse_non_finite(path, tensors)
    return tensors, metadata


def refuse_non_finite(path: Path, tensors: dict) -> None:
    import torch

    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ModelFileError(f"{path} holds NaN/inf values ({len(bad)} tensors, e.g. {bad[0]}): a LoRA of a run "
                             "that diverged, or a damaged file",
                             "use an earlier checkpoint of that run (its checkpoints/ folder), or train again "
                             "with a lower learning rate")


def read_state_dict(path: Path) -> dict:
    """All tensors of a .safetensors or legacy pickle checkpoint, read safely."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        read_header(path)  # clear messages for damaged files before safetensors' own errors
        return load_file(str(path))
    return read_pickle_checkpoint(path)
