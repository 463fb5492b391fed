"""Full training state for `lora-studio resume`: adapter, optimizer, LR schedule, position and RNG.

Layout: RUN_DIR/state/step-000123/ holding adapter.safetensors, optimizer.pt, rng.safetensors and
trainer.json. Each snapshot is written into a hidden temp folder and renamed into place in one step, so a
crash leaves either the previous snapshot or the new one, never half of one. Our own files never need
pickle: tensors go in safetensors; the optimizer's state dict (plain tensors and numbers) is read back with
`torch.load(weights_only=True)`, which refuses anything that would run code.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trainer.run.state_check import check_files, check_meta, check_tensors, damaged, file_digests
from trainer.shared import faults
from trainer.shared.fsutil import fsync_dir
from trainer.shared.save_errors import as_os_error, mark_saving

COMPLETE = "COMPLETE"
log = logging.getLogger("trainer")


@dataclass
class Position:
    step: int                 # optimizer steps done
    epoch: int                # current epoch (0-based)
    batch_in_epoch: int       # micro-batches of this epoch already consumed
    started_at: float
    extra: dict = field(default_factory=dict)


@dataclass
class TrainingState:
    """What one training run advances and a snapshot saves: the optimizer, the LR schedule, the noise
    generator and the position. One object, so they travel together and are never out of step."""

    optimizer: object
    lr_scheduler: object
    noise_gen: torch.Generator
    pos: Position
    total: int                # optimizer steps of the whole run

    def restore(self, loaded: Loaded, process_index: int) -> None:
        """Back to a snapshot (the adapter weights are the runtime's to load)."""
        self.optimizer.load_state_dict(loaded.optimizer_state)
        self.lr_scheduler.load_state_dict(loaded.lr_scheduler_state)
        restore_rng(loaded.rng, self.noise_gen, process_index)
        self.pos = loaded.position


def snapshot_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "state" / f"step-{step:06d}"


def save_state(run_dir: Path, state: TrainingState, adapters: dict[str, dict[str, torch.Tensor]],
               noise_states: list[torch.Tensor], keep: int = 2) -> Path:
    """`noise_states`: each process's noise-generator state, by process index."""
    final = snapshot_dir(run_dir, state.pos.step)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _write_snapshot(tmp, state, adapters, noise_states)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # e.g. disk full: leave no half snapshot behind
        err = as_os_error(exc)  # torch.save and safetensors wrap the OSError: unwrap it
        if err is None:
            raise
        err.filename = str(final)  # name the snapshot, not our hidden temp folder
        mark_saving(err)
        if err is exc:
            raise
        raise err from exc
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)  # the rename is durable only once the folder entry is
    _prune(final.parent, keep)
    return final


def _write_snapshot(tmp: Path, state: TrainingState, adapters, noise_states) -> None:
    flat = {f"{comp}::{key}": t.detach().cpu().contiguous() for comp, sd in adapters.items()
            for key, t in sd.items()}
    save_file(flat, str(tmp / "adapter.safetensors"))
    _torch_save(state.optimizer.state_dict(), tmp / "optimizer.pt")
    save_file(_rng_tensors(noise_states), str(tmp / "rng.safetensors"))
    meta = {"position": asdict(state.pos), "lr_scheduler": state.lr_scheduler.state_dict(),
            "files": file_digests(tmp)}  # what resume checks: these files belong to this snapshot, intact
    (tmp / "trainer.json").write_text(json.dumps(meta, default=_jsonable), encoding="utf-8")
    faults.point("state")
    (tmp / COMPLETE).write_text("ok")
    _fsync_tree(tmp)


def snapshots(run_dir: Path) -> list[Path]:
    """The complete snapshots of a run, oldest first. By step number, not by name: past step 999,999 the
    six-digit names stop sorting like numbers (step-1000000 < step-999999)."""
    root = Path(run_dir) / "state"
    found = [p for p in root.glob("step-*") if snapshot_step(p) is not None and (p / COMPLETE).exists()]
    return sorted(found, key=snapshot_step)


def snapshot_step(path: Path) -> int | None:
    match = re.fullmatch(r"step-(\d+)", Path(path).name)
    return int(match[1]) if match else None


class _KeepsWriteErrors:
    """A file for torch.save that keeps the OSError of a failed write: torch reports it as a RuntimeError
    without the errno ("unexpected pos"), which would read as a bug rather than a full disk."""

    def __init__(self, fh):
        self.fh, self.os_error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.os_error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def _torch_save(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        sink = _KeepsWriteErrors(fh)
        try:
            torch.save(obj, sink)
        except RuntimeError as exc:
            if sink.os_error is None:
                raise
            raise sink.os_error from exc


def latest_snapshot(run_dir: Path) -> Path | None:
    found = snapshots(run_dir)
    return found[-1] if found else None


@dataclass
class Loaded:
    position: Position
    adapters: dict[str, dict[str, torch.Tensor]]
    optimizer_state: dict
    lr_scheduler_state: dict
    rng: dict[str, torch.Tensor]


def load_state(snapshot: Path) -> Loaded:
    """A snapshot read and checked as a whole (trainer.run.state_check): any damage is a StateDamaged that
    says which file and what to do, never a traceback and never a silently wrong resume."""
    from trainer.models.safe_load import read_header

    meta = check_meta(snapshot, _read_json(snapshot / "trainer.json", snapshot))
    check_files(snapshot, meta)
    try:
        for name in ("adapter.safetensors", "rng.safetensors"):
            read_header(snapshot / name)  # structure first: offsets, dtypes, sizes
        flat = load_file(str(snapshot / "adapter.safetensors"))
        optimizer_state = torch.load(snapshot / "optimizer.pt", map_location="cpu", weights_only=True)
        rng = load_file(str(snapshot / "rng.safetensors"))
    except Exception as exc:  # any damage means this snapshot can't be trusted
        raise damaged(snapshot, f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    check_tensors(snapshot, flat, optimizer_state, rng)
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        comp, name = key.split("::", 1)
        adapters.setdefault(comp, {})[name] = tensor
    return Loaded(Position(**meta["position"]), adapters, optimizer_state, meta["lr_scheduler"], rng)


def _read_json(path: Path, snapshot: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise damaged(snapshot, f"{path.name} cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None


def noise_key(process_index: int) -> str:
    # process 0 keeps the name snapshots had before there was one stream per process
    return "noise" if process_index == 0 else f"noise_{process_index:02d}"


def restore_rng(rng: dict[str, torch.Tensor], noise_gen: torch.Generator, process_index: int = 0) -> None:
    torch.set_rng_state(rng["torch_cpu"])
    key = noise_key(process_index)
    if key in rng:
        noise_gen.set_state(rng[key])
    else:  # resumed on more processes than the run had: this one keeps its fresh seed
        log.warning("the saved state has no noise stream for process %d (the run had fewer processes); "
                    "the resumed run will not repeat the original exactly", process_index)
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(rng) if k.startswith("cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def _rng_tensors(noise_states: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    out.update({noise_key(i): state for i, state in enumerate(noise_states)})
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda_{i:02d}"] = state
    return out


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())


def _prune(root: Path, keep: int) -> None:
    snaps = snapshots(root.parent)
    for old in snaps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        if stale.is_dir() and str(os.getpid()) not in stale.name:
            shutil.rmtree(stale, ignore_errors=True)
