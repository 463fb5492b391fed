"""Failures a user can fix, explained: a diverged run (NaN/inf), out of GPU memory (which setting to change,
and by how much) and a full disk while saving (which file, how much space). All leave the run resumable: the
last complete snapshot in state/ is untouched, and `lora-studio resume` continues from it.
"""

from __future__ import annotations

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path

from trainer.shared.config import TrainConfig
from trainer.shared.errors import UserError


class Diverged(UserError):
    """The loss or the weights became NaN/inf: stop before the bad weights reach any file."""

    def __init__(self, step: int, checkpoints: list[Path], what: str = "the loss became NaN/inf"):
        last = f"the last good checkpoint is {checkpoints[-1]}" if checkpoints else "no checkpoint was saved yet"
        super().__init__(f"training diverged: {what} at step {step}; nothing was saved after it",
                         "lower the learning rate (halve it), use bf16 instead of fp16, or use an fp32 VAE "
                         f"(SDXL's VAE overflows in fp16); {last}")


class OutOfMemory(UserError):
    pass


class DiskFull(UserError):
    pass


def memory_advice(cfg: TrainConfig) -> list[str]:
    """The changes that free the most memory first, each with the value to set."""
    s, p, d = cfg.schedule, cfg.performance, cfg.dataset
    advice = []
    if s.batch_size > 1:
        advice.append(f"schedule.batch_size {s.batch_size} -> {s.batch_size // 2} (and "
                      f"schedule.gradient_accumulation {s.gradient_accumulation} -> "
                      f"{s.gradient_accumulation * 2} to keep the same effective batch)")
    if not p.gradient_checkpointing:
        advice.append("performance.gradient_checkpointing = true (several GB less, ~30% slower)")
    if not p.cache_latents:
        advice.append("performance.cache_latents = true (the VAE leaves the GPU during training)")
    if d.resolution > 512:
        advice.append(f"dataset.resolution {d.resolution} -> {max(512, d.resolution - 256)}")
    if cfg.lora.train_text_encoder:
        advice.append("lora.train_text_encoder = false (frozen encoders can be cached)")
    if cfg.lora.rank > 16:
        advice.append(f"lora.rank {cfg.lora.rank} -> {cfg.lora.rank // 2}")
    return advice or ["close other programs using the GPU, or use a smaller base model"]


@contextmanager
def explained(cfg: TrainConfig, run_dir: Path):
    """Turn out-of-memory and disk-full errors into UserErrors that say what to do."""
    import torch

    resume = f"then continue with: lora-studio resume {run_dir}"
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        advice = memory_advice(cfg)
        raise OutOfMemory(f"the GPU ran out of memory ({str(exc).splitlines()[0]})",
                          f"change {advice[0]}" + (f"; if that is not enough: {'; '.join(advice[1:3])}"
                                                   if len(advice) > 1 else "") + f"; {resume}") from exc
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise disk_full(exc, Path(run_dir), resume) from exc


def disk_full(exc: OSError, run_dir: Path, then: str) -> DiskFull:
    target = exc.filename or run_dir
    free = shutil.disk_usage(run_dir).free
    need = max(2 * _save_size(run_dir), 200 * 2**20)  # room for one save, with a margin
    return DiskFull(f"disk full while saving {target} ({human_size(free)} free); the previous checkpoint and "
                    "training state are intact",
                    f"free at least {human_size(need)} on that disk (one save here takes about "
                    f"{human_size(_save_size(run_dir))}), {then}")


def _save_size(run_dir: Path) -> int:
    """Bytes of the newest complete save: checkpoint adapter plus training-state snapshot."""
    from trainer.run.state import latest_snapshot

    total = 0
    snapshot = latest_snapshot(run_dir)
    if snapshot is not None:
        total += sum(p.stat().st_size for p in snapshot.iterdir() if p.is_file())
    adapters = sorted((run_dir / "checkpoints").glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    return total + (adapters[-1].stat().st_size if adapters else 0)


def human_size(size: float) -> str:
    if size < 2**20:
        return f"{size / 1024:.0f} KB"
    return f"{size / 2**20:.0f} MB" if size < 2**30 else f"{size / 2**30:.1f} GB"
