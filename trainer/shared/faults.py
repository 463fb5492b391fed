"""Fault injection for the crash-safety tests, and nothing else: inert unless LORA_STUDIO_FAULT is set.

    LORA_STUDIO_FAULT="write.safetensors@40:kill"  SIGKILL while the step-40 adapter file is being written
    LORA_STUDIO_FAULT="state@40:kill"     SIGKILL while the step-40 resume snapshot is being written
    LORA_STUDIO_FAULT="sample@80:kill"    SIGKILL after the first preview image of step 80
    LORA_STUDIO_FAULT="step@7:kill"       SIGKILL in the middle of step 7 (after backward, before the update)
    LORA_STUDIO_FAULT="step@3:oom"        a CUDA out-of-memory error in step 3
    LORA_STUDIO_FAULT="write.safetensors@40:enospc"  "No space left on device" while saving at step 40
    LORA_STUDIO_FAULT="state@40:erofs"    a read-only disk (also efbig: file too large, eacces: no permission)
    LORA_STUDIO_FAULT="write.txt:sleep0.05"  50 ms before every caption write (so a stop lands mid-run)
    LORA_STUDIO_FAULT="connect:crash"     an exception just before the processes of a launch connect

LORA_STUDIO_FAULT_RANK=1 limits the faults to the process of that rank in a multi-process launch (the RANK
that accelerate launch / torchrun set): how the tests make one process fail while the others carry on.

The loop records the current step here; each named point calls `point(name)`. Kept torch-free: fsutil
(used by the GUI's config saving) calls it too.
"""

from __future__ import annotations

import errno
import os
import signal
import time

ENV = "LORA_STUDIO_FAULT"
RANK_ENV = "LORA_STUDIO_FAULT_RANK"
ERRNOS = {"enospc": errno.ENOSPC, "efbig": errno.EFBIG, "erofs": errno.EROFS, "eacces": errno.EACCES}
current_step = 0


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec or os.environ.get(RANK_ENV, os.environ.get("RANK", "0")) != os.environ.get("RANK", "0"):
        return
    for item in spec.split(","):
        where, _, action = item.partition(":")
        target, _, at = where.partition("@")
        if target == name and (not at or int(at) == current_step):
            _act(action, name)


def _act(action: str, name: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "oom":
        import torch

        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB ({name}, injected)")
    if action.startswith("sleep"):
        time.sleep(float(action.removeprefix("sleep") or 0.1))
    if action in ERRNOS:  # what the operating system says when a write is refused
        raise OSError(ERRNOS[action], os.strerror(ERRNOS[action]))
    if action == "crash":
        raise RuntimeError(f"injected crash at '{name}'")
