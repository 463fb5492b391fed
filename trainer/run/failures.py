"""Failures a user can fix, explained: a diverged run (NaN/inf), out of GPU memory (which setting to change,
and by how much) and the operating system refusing a save (full disk, file too large, read-only disk, no
permission: which file, how much space; trainer.shared.save_errors). All leave the run resumable: the last
complete snapshot in state/ is untouched, and `lora-studio resume` continues from it.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from trainer.shared.config import TrainConfig
from trainer.shared.errors import UserError
from trainer.shared.save_errors import DiskFull, human_size, save_failure  # noqa: F401 (DiskFull: re-exported)


class Diverged(UserError):
    """The loss or the weights became NaN/inf: stop before the bad weights reach any file."""

    def __init__(self, step: int, checkpoints: list[Path], what: str = "the loss became NaN/inf"):
        last = f"the last good checkpoint is {checkpoints[-1]}" if checkpoints else "no checkpoint was saved yet"
        super().__init__(f"training diverged: {what} at step {step}; nothing was saved after it",
                         "lower the learning rate (halve it), use bf16 instead of fp16, or use an fp32 VAE "
                         f"(SDXL's VAE overflows in fp16); {last}")


class OutOfMemory(UserError):
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
    except Exception as exc:  # OSError, or a library's wrapping of one (safetensors, torch.save)
        failure = save_failed(exc, Path(run_dir), resume)
        if failure is None:
            raise
        raise failure from exc


def save_failed(exc: BaseException, run_dir: Path, then: str) -> UserError | None:
    """The OS refused a write (full disk, file too large, read-only, no permission), explained; else None."""
    size = _save_size(run_dir)
    need = f"free at least {human_size(max(2 * size, 200 * 2**20))} on that disk (one save here takes about " \
           f"{human_size(size)})"  # room for one save, with a margin
    return save_failure(exc, run_dir, then, need, intact="the previous checkpoint and training state are intact")


def _save_size(run_dir: Path) -> int:
    """Bytes of the newest complete save: checkpoint adapter plus training-state snapshot."""
    from trainer.run.state import latest_snapshot

    total = 0
    snapshot = latest_snapshot(run_dir)
    if snapshot is not None:
        total += sum(p.stat().st_size for p in snapshot.iterdir() if p.is_file())
    adapters = sorted((run_dir / "checkpoints").glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    return total + (adapters[-1].stat().st_size if adapters else 0)

