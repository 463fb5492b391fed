"""Progress without a host sync per step: the loss of each step stays on the device and is read back in
one go every `performance.report_every_n_steps` steps, and always before a checkpoint, sample, validation,
stop or the final save. Then each step still gets its own `progress` event (the protocol is unchanged, the
events arrive in small bursts) and a NaN/inf loss stops the run naming the exact step, before any file is
written from the diverged weights.

Why: on a GPU, `loss.item()` waits for the whole step to finish, so the host cannot queue the next one; the
device idles for the Python between steps. On a CPU a read costs nothing, so auto reads every step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from trainer.run.failures import Diverged
from trainer.shared import events as ev

GPU_REPORT_EVERY = 10
MAX_DELAY_S = 1.0  # one process: progress never waits longer than this, so slow steps still show at once


@dataclass
class Speed:
    """Rolling speed so it/s and ETA settle quickly and ignore the slow first steps."""

    last: float = 0.0
    it_s: float = 0.0

    def tick(self) -> float:
        now = time.perf_counter()
        if self.last:
            rate = 1.0 / max(now - self.last, 1e-9)
            self.it_s = rate if not self.it_s else 0.8 * self.it_s + 0.2 * rate
        self.last = now
        return self.it_s


@dataclass
class _Step:
    step: int
    epoch: int
    loss: torch.Tensor   # 0-d, on the device, not yet read
    lr: float
    it_s: float


class Reporter:
    def __init__(self, rt, total: int):
        self.rt, self.total = rt, total
        every = rt.cfg.performance.report_every_n_steps
        self.every = every or (1 if rt.device.type == "cpu" else GPU_REPORT_EVERY)
        self.pending: list[_Step] = []
        self.speed = Speed()
        self.single = rt.accelerator.num_processes == 1
        self.flushed_at = time.perf_counter()

    def add(self, step: int, epoch: int, loss: torch.Tensor, lr: float) -> None:
        self.pending.append(_Step(step, epoch, loss, lr, self.speed.tick()))

    @property
    def full(self) -> bool:
        """Every `every` steps; with one process also once MAX_DELAY_S has passed. Several processes count
        steps only: their answers must agree, since a flush is a collective."""
        if len(self.pending) >= self.every:
            return True
        return self.single and bool(self.pending) and time.perf_counter() - self.flushed_at >= MAX_DELAY_S

    def flush(self, saved_checkpoints: list) -> None:
        """Read the pending losses (one sync, one all-reduce), emit their events; Diverged on NaN/inf."""
        if not self.pending:
            return
        losses = self.rt.mean_over_processes(torch.stack([p.loss for p in self.pending]).float()).tolist()
        pending, self.pending, self.flushed_at = self.pending, [], time.perf_counter()
        for p, loss in zip(pending, losses):
            if not math.isfinite(loss):
                raise Diverged(p.step, saved_checkpoints)
            eta = (self.total - p.step) / p.it_s if p.it_s else 0.0
            self.rt.sink.emit(ev.Progress(step=p.step, total=self.total, epoch=p.epoch + 1, loss=loss, lr=p.lr,
                                          it_s=round(p.it_s, 3), eta_s=round(eta, 1)))
            self.rt.log_scalars(p.step, {"loss": loss, "lr/unet": p.lr, "speed/it_s": p.it_s})
