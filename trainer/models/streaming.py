"""Load any diffusers or transformers model straight into the dtype it will be used in, tensor by tensor.

Why not `from_single_file` / `from_pretrained`: they hold the whole checkpoint in memory while they convert
and cast it, so loading SDXL took 21 GB of RAM (every weight in fp32 next to a second copy). Here:

1. the model is built on the meta device from its config (no memory, no random init);
2. the key conversion (diffusers' own single-file converters, or none for a diffusers folder) is run once on
   meta tensors with the file's shapes, which tells which target key is a plain rename of which file key;
3. each renamed tensor is read from the file alone and cast at once to the dtype its parameter will have
   (converted straight out of the page cache, whose pages are then let go so that they don't count in RSS); the few tensors the converter computes (fused
   attention split, transposes) are read as the file stores them and converted for real;
4. the tensors are assigned into the model (`load_state_dict(assign=True)`: no copy).

Peak memory is the finished model plus one tensor, whatever the file's dtype. Works for any model class whose
state dict a converter can produce, e.g. a 12B transformer and a T5 encoder read from sharded files.
"""

from __future__ import annotations

import json
import logging
import math
import mmap
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from trainer.models.safe_load import read_pickle_checkpoint, read_tensor_index
from trainer.shared.errors import ModelFileError

log = logging.getLogger("trainer")
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn,
                      "F8_E5M2": torch.float8_e5m2}
FP8_MAX = 448.0  # largest float8_e4m3fn value: saturate instead of turning outliers into NaN


class TensorFile:
    """Tensors of one checkpoint, read one at a time: a .safetensors file (or the shards of a sharded one)
    read with plain file reads, or a legacy pickle loaded with weights_only=True and memory-mapped."""

    def __init__(self, paths: list[Path]):
        self.paths = [Path(p) for p in paths]
        self._maps: dict[Path, mmap.mmap] = {}
        self.entries: dict[str, tuple] = {}   # key -> (path, dtype, shape, start, end) or (None, tensor)
        for path in self.paths:
            if path.suffix.lower() == ".safetensors":
                for key, (dtype, shape, start, end) in read_tensor_index(path).items():
                    self.entries[key] = (path, SAFETENSORS_DTYPES.get(dtype), tuple(shape), start, end)
            else:
                for key, tensor in read_pickle_checkpoint(path).items():
                    if isinstance(tensor, torch.Tensor):
                        self.entries[key] = (None, tensor)

    @classmethod
    def open(cls, path: Path) -> TensorFile:
        """A weights file, or a `*.safetensors.index.json` naming its shards."""
        path = Path(path)
        if path.name.endswith(".index.json"):
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            return cls([path.parent / name for name in shards])
        return cls([path])

    def within(self, prefix: str) -> TensorFile:
        """The tensors under `prefix`, named without it: one component of an all-in-one checkpoint."""
        part = TensorFile([])
        part.paths, part._maps = self.paths, self._maps
        part.entries = {k[len(prefix):]: v for k, v in self.entries.items() if k.startswith(prefix)}
        return part

    def keys(self) -> list[str]:
        return list(self.entries)

    def dtype(self, key: str) -> torch.dtype:
        entry = self.entries[key]
        return entry[1].dtype if entry[0] is None else entry[1]

    def shape(self, key: str) -> tuple:
        entry = self.entries[key]
        return tuple(entry[1].shape) if entry[0] is None else entry[2]

    def read(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One tensor, cast to `dtype` (float8 targets saturate at ±448 first)."""
        entry = self.entries[key]
        if entry[0] is None:  # a pickle, memory-mapped by torch.load: always hand out a copy
            return _cast(entry[1], dtype, copy=True)
        path, file_dtype, shape, start, end = entry
        mapped = self._mapping(path)
        if mapped is None or dtype in (None, file_dtype) or not file_dtype.is_floating_point or not math.prod(shape):
            return _cast(self._read_safetensors(*entry), dtype, copy=False)
        # Converting: one pass straight out of the page cache instead of a read and then a cast. The pages
        # are let go at once, or the whole file would end up counted in our RSS.
        offset = _data_start(path) + start
        view = torch.frombuffer(mapped, dtype=file_dtype, count=math.prod(shape), offset=offset).reshape(shape)
        out = _cast(view, dtype, copy=False)
        del view
        page = mmap.PAGESIZE
        mapped.madvise(mmap.MADV_DONTNEED, offset // page * page, offset + end - start - offset // page * page)
        return out

    def _mapping(self, path: Path):
        if not hasattr(mmap, "MADV_DONTNEED"):  # Windows: plain reads only
            return None
        if path not in self._maps:
            with open(path, "rb") as fh:  # ACCESS_COPY: writable for torch.frombuffer, never written
                self._maps[path] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        return self._maps[path]

    @staticmethod
    def _read_safetensors(path: Path, dtype: torch.dtype, shape: tuple, start: int, end: int) -> torch.Tensor:
        buffer = torch.empty(end - start, dtype=torch.uint8)
        with open(path, "rb") as fh:
            fh.seek(_data_start(path) + start)
            if fh.readinto(buffer.numpy()) != end - start:
                raise ModelFileError(f"{path} is truncated", "the download or copy stopped early: get it again")
        return buffer.view(dtype).reshape(shape)


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None, copy: bool) -> torch.Tensor:
    if dtype is None or tensor.dtype == dtype or not tensor.is_floating_point():
        return tensor.clone() if copy else tensor
    if dtype == torch.float8_e4m3fn:
        tensor = tensor.clamp(-FP8_MAX, FP8_MAX)
    return tensor.to(dtype)


_DATA_START: dict[Path, int] = {}


def _data_start(path: Path) -> int:
    if path not in _DATA_START:
        with open(path, "rb") as fh:
            _DATA_START[path] = 8 + int.from_bytes(fh.read(8), "little")
    return _DATA_START[path]


Converter = Callable[[dict], dict]
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def return_freed_memory() -> None:
    """From now on every allocation over 128 KB gets its own mapping, returned to the system when freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which the per-tensor
    casts while loading, and the per-layer fp8 upcasts while training, come from the heap and stay counted in
    RSS: 0.2 GB on SD1.5 at load, 0.3 GB more in an fp8 run. Measured cost in a CPU training step: ~5 %.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def _glibc():
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:  # musl and other C libraries: nothing to tune
        return None


def load_component(build: Callable[[], torch.nn.Module], source: TensorFile, keys: list[str],
                   convert: Converter | None, dtype_for: Callable[[torch.nn.Module, str], torch.dtype],
                   name: str) -> torch.nn.Module:
    """Build a model on the meta device with `build()`, then fill it from `keys` of `source`.

    `convert` maps {file key: tensor} to {model key: tensor} (None: the keys already match); `dtype_for(model,
    key)` says which dtype each parameter is kept in. `name` names the component in error messages.
    """
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on meta, buffers real (e.g. CLIP's position_ids)
        model = build()
    from trainer.models import fp8_scales

    def kept_dtype(target: str) -> torch.dtype:
        return fp8_scales.read_dtype(target, dtype_for(model, target))

    plan, computed = _plan_conversion(source, keys, convert or _identity, model)
    state = _read_all(source, plan, kept_dtype)
    for target, tensor in computed.items():
        state[target] = tensor.to(kept_dtype(target)).contiguous()
    scales = fp8_scales.take_weight_scales(state, name)
    _assign(model, state, name, source)
    fp8_scales.attach_weight_scales(model, scales)
    return model


def _read_all(source: TensorFile, plan: dict, dtype_of) -> dict:
    """Two tensors at a time: one thread's page faults and cast overlap the other's (torch and the kernel
    release the GIL); at most two tensors beyond the model are in memory."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {target: pool.submit(_read_rows, source, key, dtype_of(target)) for target, key in plan.items()}
        return {target: future.result() for target, future in futures.items()}


def _read_rows(source: TensorFile, key, dtype):
    """A file tensor, or (file key, rows): those rows of it, copied, so the whole tensor is let go."""
    if isinstance(key, str):
        return source.read(key, dtype)
    name, rows = key
    whole = source.read(name)
    if whole.element_size() == 1 and whole.is_floating_point():  # float8 has no index_select: select bytes
        part = whole.view(torch.uint8).index_select(0, rows).view(whole.dtype)
    else:
        part = whole.index_select(0, rows)
    return _cast(part, dtype, copy=False)


def _identity(state: dict) -> dict:
    return dict(state)


def _plan_conversion(source: TensorFile, keys: list[str], convert: Converter, model) -> tuple[dict, dict]:
    """({model key: file key, or (file key, rows)} for renames and row slices, {model key: tensor} for tensors
    the converter computes otherwise)."""
    meta = {k: torch.empty(source.shape(k), dtype=source.dtype(k), device="meta") for k in keys}
    converted = _match_model_keys(convert(meta), model)
    origin = {id(t): k for k, t in meta.items()}
    plan = {target: origin[id(t)] for target, t in converted.items() if id(t) in origin}
    rest = [k for k in keys if k not in set(plan.values())]
    if len(plan) == len(converted):
        return plan, {}
    if getattr(convert, "rows_only", False):  # each tensor is rows of one file tensor: read them one by one
        rows = _row_plan(source, keys, convert, model)
        if rows is not None:
            return rows, {}
    # Tensors the converter computes (transposes, concatenations): convert those sources for real
    # (few and small: OpenCLIP's fused attention in-projections, the VAE's 1x1 convolutions).
    mixed = dict(meta)
    mixed.update({k: source.read(k) for k in rest})
    again = _match_model_keys(convert(mixed), model)
    computed = {t: v for t, v in again.items() if t not in plan}
    if any(v.device.type == "meta" for v in computed.values()):  # a computed tensor needs a renamed source
        log.warning("%d tensors need the whole component converted in memory", len(computed))
        real = {k: source.read(k) for k in keys}
        return {}, _match_model_keys(convert(real), model)
    return plan, computed


ROW_TAG = 2 ** 32  # a row tag is file-key index × ROW_TAG + row: exact in float64 for any real model


def rows_only(convert: Converter) -> Converter:
    """Mark a converter that only renames, splits and reorders rows of file tensors (never transposes or
    reshapes them): its plan is then found from row tags, and a split fused tensor is read one part at a time
    instead of converting the whole component in memory (FLUX's 12 GB transformer)."""
    convert.rows_only = True
    return convert


def _row_plan(source: TensorFile, keys: list[str], convert: Converter, model) -> dict | None:
    """{model key: (file key, row indices)} for a `rows_only` converter, found by converting one float64 "row
    tag" per row instead of the weights; None when some tensor is more than rows of one file tensor."""
    tags = {k: torch.arange(source.shape(k)[0], dtype=torch.float64) + i * ROW_TAG
            for i, k in enumerate(keys) if source.shape(k)}
    if len(tags) != len(keys):
        return None
    try:
        converted = _match_model_keys(convert(dict(tags)), model)
    except (RuntimeError, ValueError, KeyError, IndexError):  # the converter needs more than rows
        return None
    expected = model.state_dict()
    plan = {}
    for target, tag in converted.items():
        if tag.dim() != 1 or target not in expected or tag.shape[0] != expected[target].shape[0]:
            return None
        index = int(tag[0].item()) // ROW_TAG
        if not torch.equal(tag // ROW_TAG, torch.full_like(tag, index)):
            return None  # rows of several file tensors
        rows = (tag - index * ROW_TAG).long()
        whole = rows.shape[0] == source.shape(keys[index])[0] and torch.equal(rows, torch.arange(rows.shape[0]))
        plan[target] = keys[index] if whole else (keys[index], rows)
    return plan


def _match_model_keys(state: dict, model: torch.nn.Module) -> dict:
    """transformers 5 dropped CLIPTextModel's `text_model.` level that files (and converters) still use."""
    expected = set(model.state_dict().keys())
    out = {}
    for key, tensor in state.items():
        if key not in expected and key.startswith("text_model.") and key[len("text_model."):] in expected:
            key = key[len("text_model."):]
        out[key] = tensor
    return out


def _assign(model: torch.nn.Module, state: dict, name: str, source: TensorFile) -> None:
    expected = model.state_dict()
    unexpected = [k for k in state if k not in expected]
    for key in unexpected:  # e.g. position_ids that the file stores and the model keeps as a buffer
        state.pop(key)
    for key, tensor in expected.items():
        if key not in state and tensor.device.type != "meta":
            state[key] = tensor  # real buffers built with the model
    missing = [k for k in expected if k not in state]
    files = ", ".join(str(p) for p in source.paths)
    if missing:
        raise ModelFileError(f"{files} lacks {len(missing)} weights of the {name}, e.g. {missing[:3]}",
                             "the file is incomplete or of another architecture: get the full model file")
    wrong = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in expected
             if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        key, got, want = wrong[0]
        raise ModelFileError(f"{files}: the {name}'s {key} has shape {got}, expected {want} "
                             f"({len(wrong)} tensors differ)",
                             "the file's weights don't fit the detected architecture; it may be damaged or a "
                             "merge of another kind")
    model.load_state_dict(state, strict=True, assign=True)
    if unexpected:
        log.debug("%s: ignored %d tensors the model does not use: %s", name, len(unexpected), unexpected[:3])
