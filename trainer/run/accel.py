"""Speed on a CUDA GPU: what the device can do faster, chosen explicitly instead of left to defaults.

- channels-last UNet: convolutions run in NHWC on tensor cores without layout changes around each one;
- SDPA kernels in a fixed order (flash, memory-efficient, cuDNN, then math as the fallback that always works);
- host-to-device copies from pinned memory, non-blocking: a copy from ordinary (pageable) memory waits for
  the GPU to finish all queued work first, a hidden host sync every step;
- opt-in regional torch.compile (performance.compile): diffusers' compile_repeated_blocks compiles each
  transformer block once for all of them, seconds instead of minutes for the whole UNet.

On a CPU these are no-ops except compile, which works there too (slowly to compile, tested with the eager
backend). bench/gpu.py has a row for each.
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch

log = logging.getLogger("trainer")
COMPILE_BACKEND = "inductor"  # tests use "eager": same wiring, no C++/Triton build


def preferred_sdpa_backends(device: torch.device) -> list:
    """The order SDPA tries its kernels in on `device`; empty: PyTorch's own choice (CPU)."""
    if device.type != "cuda":
        return []
    from torch.nn.attention import SDPBackend

    return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
            SDPBackend.MATH]


def attention_kernels(device: torch.device):
    """Context for the UNet's forward and backward: SDPA limited to, and ordered by, preferred_sdpa_backends."""
    backends = preferred_sdpa_backends(device)
    if not backends:
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(backends, set_priority=True)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without a host sync: through pinned memory, non-blocking, on CUDA."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)  # pinned blocks are cached by PyTorch


def channels_last(unet: torch.nn.Module, device: torch.device) -> bool:
    if device.type != "cuda":
        return False  # on a CPU, oneDNN's NHWC path is not faster for these small convolutions
    unet.to(memory_format=torch.channels_last)
    return True


def compile_blocks(unet: torch.nn.Module) -> int:
    """Compile each of the UNet's transformer blocks (regional compilation); the number compiled."""
    unet.compile_repeated_blocks(backend=COMPILE_BACKEND)
    return sum(1 for m in unet.modules() if m.__class__.__name__ in unet._repeated_blocks)


class CompileClock:
    """torch.compile compiles at the first call: the first step's extra time is the compile time. Logged
    once, after the second step, as first-step time minus second-step time."""

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled, self.device, self.times = enabled, device, []
        self.started = 0.0

    def start(self) -> None:
        if self.enabled and len(self.times) < 2:
            self.started = time.perf_counter()

    def stop(self) -> None:
        if not self.enabled or len(self.times) >= 2:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # twice per run only
        self.times.append(time.perf_counter() - self.started)
        if len(self.times) == 2:
            first, second = self.times
            log.info("torch.compile: the UNet's transformer blocks compiled in %.1f s (first step %.2f s, "
                     "second %.3f s)", first - second, first, second)
