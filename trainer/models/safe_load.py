"""Reading checkpoint files without trusting them.

Safetensors: the header is parsed by hand first (8-byte length + JSON), so a truncated download, an HTML
error page saved as .safetensors, or a zero-byte file gets a message that says so, instead of a cryptic
error from deep inside a loader. Pickles (.ckpt/.pt/.pth/.bin) are loaded with `weights_only=True` only:
a pickle that wants to run code is refused, never executed.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
from pathlib import Path

from trainer.shared.errors import ModelFileError

MAX_HEADER = 100_000_000   # bytes of JSON: the safetensors library's own limit
# bits per element of every dtype the safetensors format defines (F4/F6: packed below one byte)
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
              "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
              "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


def read_header(path: Path) -> tuple[dict[str, tuple], dict[str, str]]:
    """Return ({tensor name: shape}, metadata) of a .safetensors file, checking that it is complete."""
    entries, metadata = _header(Path(path))
    return {name: tuple(shape) for name, (_dtype, shape, _start, _end) in entries.items()}, metadata


def read_tensor_index(path: Path) -> dict[str, tuple[str, list, int, int]]:
    """{tensor name: (dtype, shape, start, end)} of a .safetensors file, offsets relative to its data."""
    return _header(Path(path))[0]


def _header(path: Path) -> tuple[dict[str, tuple[str, list, int, int]], dict[str, str]]:
    """The header checked as strictly as the safetensors library checks it, before any tensor is read: a
    JSON object; `__metadata__` a table of strings; each tensor an object with a known dtype, a shape whose
    size is exactly its span, spans laid end to end from 0 (none overlapping, none negative), the last
    ending where the file ends."""
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
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _not_safetensors(path, head) from None
    if not isinstance(header, dict):
        raise _invalid(path, f"its header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _invalid(path, "its __metadata__ is not a table of strings")
    entries = {name: _entry(path, name, entry) for name, entry in header.items()}
    _check_layout(path, entries, size - 8 - length)
    return entries, metadata


def _no_duplicates(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a name appears twice in the header")
    return dict(pairs)


def _entry(path: Path, name: str, entry: object) -> tuple[str, list, int, int]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _invalid(path, f"tensor {name!r} is not described by dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BITS:
        raise _invalid(path, f"tensor {name!r} has the unknown dtype {str(dtype)[:20]!r}")
    if not isinstance(shape, list) or not all(_natural(n) for n in shape):
        raise _invalid(path, f"tensor {name!r} has the shape {str(shape)[:60]}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_natural(n) for n in offsets) \
            or offsets[0] > offsets[1]:
        raise _invalid(path, f"tensor {name!r} has the data offsets {str(offsets)[:60]}")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        raise _invalid(path, f"tensor {name!r} ({dtype} {shape}) needs {bits / 8:g} bytes, its span holds "
                             f"{offsets[1] - offsets[0]}")
    return dtype, shape, offsets[0], offsets[1]


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_layout(path: Path, entries: dict, data_bytes: int) -> None:
    """The spans, in order, laid end to end from 0 and ending with the file."""
    end = 0
    for name, (_dtype, _shape, start, stop) in sorted(entries.items(), key=lambda item: item[1][2:]):
        if start != end:
            raise _invalid(path, f"tensor {name!r} starts at byte {start}, not {end} (spans overlap or leave "
                                 "gaps)")
        end = stop
    if end > data_bytes:
        size = path.stat().st_size
        raise ModelFileError(f"{path} is truncated: it holds {size:,} bytes of {size - data_bytes + end:,}",
                             "the download or copy stopped early: get the file again")
    if end < data_bytes:
        raise _invalid(path, f"{data_bytes - end:,} bytes follow its last tensor")


def _invalid(path: Path, problem: str) -> ModelFileError:
    return ModelFileError(f"{path} is not a valid safetensors file: {problem}",
                          "the file is damaged, or was written by a faulty tool: get or export it again")


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

    try:  # mmap reads only the zip format (torch >= 1.6); a legacy pickle is read into memory, as safely
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise ModelFileError(
                f"{path} is a pickle that wants to run code when loaded; LoRA Studio will not load it",
                "get a .safetensors version of this model, or convert it with a tool you trust") from None
        raise _damaged(path, exc) from None
    except Exception as exc:  # a legacy pickle read without mmap fails in more ways (KeyError on junk)
        raise _damaged(path, exc) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} holds a {type(data).__name__}, not a model's weights",
                             "pick a Stable Diffusion checkpoint")
    return data


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


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
