"""Failures a user can fix, explained: out of GPU memory (which setting to change, and by how much) and a
full disk while saving (how much space, and that the previous checkpoint is intact). Both leave the run
resumable: the last complete snapshot in state/ is untouched, and `lora-studio resume` continues from it.
"""

from __future__ import annotations

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path

from trainer.config import TrainConfig
from trainer.errors import UserError


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
        free = shutil.disk_usage(run_dir).free / 2**20
        raise DiskFull(f"the disk holding {run_dir} is full ({free:.0f} MB free) while saving; the previous "
                       "checkpoint and training state are intact",
                       f"free some space (a checkpoint needs a few hundred MB at most), {resume}") from exc
