"""Latents on disk, so the second epoch and the second run skip the VAE for unchanged images.

An entry is keyed by the image's content hash, the VAE's identity (config + a weight fingerprint), the
bucket, the crop and the flip: change any of them and it is a different entry. An entry that is damaged,
of the wrong shape, not finite, or written for another key is deleted and rebuilt, never trusted.
The cache lives in the user's cache folder (LORA_STUDIO_CACHE overrides it), never in the dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from trainer.shared.fsutil import atomic_write_bytes


def default_cache_dir() -> Path:
    if os.environ.get("LORA_STUDIO_CACHE"):
        return Path(os.environ["LORA_STUDIO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "lora-studio" / "latents"


def vae_identity(vae) -> str:
    """The same VAE weights give the same identity; any other VAE a different one."""
    h = hashlib.sha256(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    params = list(vae.parameters())
    for p in params[:2] + params[-2:]:
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes()[:65536])
    return h.hexdigest()[:24]


_hash_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    stat = Path(path).stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_memo:
        _hash_memo[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return _hash_memo[key]


class LatentCache:
    def __init__(self, folder: Path, vae_id: str):
        self.folder = Path(folder) / vae_id
        self.vae_id = vae_id
        self.hits = self.misses = self.rebuilt = 0

    def key(self, image_sha: str, bucket: tuple[int, int], crop: tuple[int, int], flip: bool) -> str:
        raw = f"{image_sha}|{bucket[0]}x{bucket[1]}|{crop[0]},{crop[1]}|{int(flip)}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, key: str, expected_shape: tuple) -> torch.Tensor | None:
        path = self._path(key)
        if not path.exists():
            self.misses += 1
            return None
        tensor = _read_entry(path, key)
        if tensor is None or tuple(tensor.shape) != tuple(expected_shape) or not torch.isfinite(tensor).all():
            path.unlink(missing_ok=True)
            self.rebuilt += 1
            return None
        self.hits += 1
        return tensor

    def put(self, key: str, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().cpu().contiguous()
        data = save({"latent_params": tensor}, metadata={"key": key, "vae": self.vae_id, "crc32": _crc(tensor)})
        try:
            # not durable: get() checks every entry and rebuilds a bad one; 24 fsync'd entries cost 0.1-0.2 s
            atomic_write_bytes(self._path(key), data, durable=False)
        except OSError:
            pass  # a full or read-only cache disk only costs speed; training goes on


def _crc(tensor: torch.Tensor) -> str:
    return str(zlib.crc32(tensor.numpy().tobytes()))


def _read_entry(path: Path, key: str) -> torch.Tensor | None:
    """The entry's tensor, or None if it is damaged or belongs to another key. Entries are written without
    fsync, so after a power cut one may hold zeros or garbage: its checksum catches that."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensor = f.get_tensor("latent_params")
    except (SafetensorError, OSError, RuntimeError):
        return None
    if meta.get("key") != key or meta.get("crc32", _crc(tensor)) != _crc(tensor):  # older entries: no crc
        return None
    return tensor
