"""`performance.blocks_to_swap`: the frozen weights of the denoiser's last N transformer blocks live in (pinned)
CPU RAM and visit the GPU one block at a time, as kohya's --blocks_to_swap and OneTrainer's layer offload do.

How a block's weights travel:

- forward (training and previews): the block's forward pre-hook installs its weights (copied now, or waited for
  when the previous block prefetched them on a side CUDA stream) and starts copying the next swapped block; its
  forward hook drops them again. Gradient checkpointing (required) is what makes the drop safe: diffusers runs
  each block through `torch.utils.checkpoint.checkpoint(block.__call__, ..., use_reentrant=False)`, which keeps
  none of the block's tensors, the weights included, for the backward (FluxTransformer2DModel,
  ZImageTransformer2DModel and Flux2Transformer2DModel all call their blocks so, diffusers 0.3x).
- backward: the checkpoint recomputes the block by calling `block.__call__` again, so the same pre-hook brings
  its weights back (and prefetches the block before it). The recompute may stop early, before the forward hook
  runs, and the block's backward needs its weights after the recompute anyway: so in the backward a block is
  dropped when the block before it starts recomputing. By then its backward is over: a block's outputs feed
  only the next block, so the one before cannot start its backward until this one handed back its input's
  gradient, and every node of a block that holds a weight lies on that path. What is left at the end of the
  backward (the first swapped block) is dropped by a callback queued on autograd's engine.

Only frozen tensors move (base weights, fp8 ones as fp8: half the traffic of bf16); the LoRA parameters stay on
the device, so the optimizer never sees a move. On a CPU the copies are no-ops; the bookkeeping (`events`,
`peak`) is the same everywhere, and tests swap in their own `Transfer` to watch it.
"""

from __future__ import annotations

import logging

import torch

from trainer.shared.errors import ConfigError

log = logging.getLogger("trainer")
KEEP_RESIDENT = 1  # blocks that never leave the device: with none left, nothing would overlap the first copy


def _in_backward() -> bool:
    """Whether autograd's engine is running a backward on this thread (a checkpoint recomputing a block):
    the test torch.utils.checkpoint itself makes (torch 2.x)."""
    return torch._C._current_graph_task_id() != -1


def swappable(family, denoiser: torch.nn.Module) -> list[torch.nn.Module]:
    """The denoiser's transformer blocks in the order they run (the family's `swap_blocks` lists)."""
    return [block for name in family.swap_blocks for block in getattr(denoiser, name)]


def check_count(family, count: int, blocks: int) -> None:
    """Refuse a blocks_to_swap the model cannot give, naming the key and the model's block count."""
    if count > blocks - KEEP_RESIDENT:
        raise ConfigError(f"config key 'performance.blocks_to_swap' is {count}; this {family.label} {family.denoiser} "
                          f"has {blocks} swappable blocks ({' + '.join(family.swap_blocks)})",
                          f"use at most {blocks - KEEP_RESIDENT}: at least {KEEP_RESIDENT} block stays on the GPU")


class Transfer:
    """The device side: where a frozen tensor waits, and how it is copied over. On CUDA the copies run on a side
    stream and the compute stream waits for them only when the block is about to run."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def home(self, tensor: torch.Tensor) -> torch.Tensor:
        """The RAM copy, pinned on CUDA so the copies can run asynchronously."""
        ram = tensor.detach().to("cpu")
        return ram.pin_memory() if self.stream is not None else ram

    def away(self, home: torch.Tensor) -> torch.Tensor:
        """What the parameter holds while its block is off the device."""
        return home

    def start(self, homes: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.stream is None:
            return [h.to(self.device) for h in homes]
        with torch.cuda.stream(self.stream):
            return [h.to(self.device, non_blocking=True) for h in homes]

    def finish(self, tensors: list[torch.Tensor]) -> None:
        """Make the compute stream wait for the copies, and keep their memory until it is done with them."""
        if self.stream is None:
            return
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(self.stream)
        for tensor in tensors:
            tensor.record_stream(current)


class BlockSwap:
    def __init__(self, blocks: list[torch.nn.Module], count: int, transfer: Transfer):
        self.blocks, self.transfer = blocks, transfer
        self.swapped = range(len(blocks) - count, len(blocks))
        self.homes = {i: self._park(blocks[i]) for i in self.swapped}  # per block: [(frozen param, RAM copy)]
        self.loaded: dict[int, list] = {}    # block -> its device tensors, installed
        self.pending: dict[int, list] = {}   # block -> its device tensors, copying
        self.events: list[tuple[str, int, str]] = []  # ("load" | "drop", block, "forward" | "backward")
        self.peak = 0                        # most swapped blocks on the device at once (loaded + copying)
        self._queued_for = None              # the backward whose end callback is queued
        self.handles = [h for i, block in enumerate(blocks) for h in (
            block.register_forward_pre_hook(lambda _m, _a, i=i: self._before(i)),
            block.register_forward_hook(lambda _m, _a, _o, i=i: self._after(i)))]

    def _park(self, block: torch.nn.Module) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
        pairs = []
        for param in block.parameters():
            if not param.requires_grad:  # one at a time: the unpinned tensor goes as its pinned copy comes
                pairs.append((param, self.transfer.home(param.data)))
                param.data = self.transfer.away(pairs[-1][1])
        return pairs

    def parked_ids(self) -> set[int]:
        """The parameters that stay in RAM: placing the denoiser on the device leaves these alone."""
        return {id(p) for pairs in self.homes.values() for p, _ in pairs}

    @property
    def ram_bytes(self) -> int:
        return sum(h.numel() * h.element_size() for pairs in self.homes.values() for _, h in pairs)

    def _before(self, i: int) -> None:
        backward = _in_backward()
        phase = "backward" if backward else "forward"
        if backward:
            self._end_with_backward()
            for done in [j for j in self.loaded if j > i]:  # their backward is over (module docstring)
                self._drop(done, phase)
        if i in self.swapped and i not in self.loaded:
            self._load(i, phase)
        self._prefetch(i - 1 if backward else i + 1)

    def _after(self, i: int) -> None:
        if i in self.loaded and not _in_backward():
            self._drop(i, "forward")

    def _prefetch(self, i: int) -> None:
        if i in self.swapped and i not in self.loaded and i not in self.pending:
            self.pending[i] = self.transfer.start([h for _, h in self.homes[i]])
            self.peak = max(self.peak, len(self.loaded) + len(self.pending))

    def _load(self, i: int, phase: str) -> None:
        self._prefetch(i)
        tensors = self.pending.pop(i)
        self.transfer.finish(tensors)
        for (param, _), tensor in zip(self.homes[i], tensors):
            param.data = tensor
        self.loaded[i] = tensors
        self.events.append(("load", i, phase))

    def _drop(self, i: int, phase: str) -> None:
        for param, home in self.homes[i]:
            param.data = self.transfer.away(home)
        del self.loaded[i]
        self.events.append(("drop", i, phase))

    def _end_with_backward(self) -> None:
        task = torch._C._current_graph_task_id()  # which backward: one callback each
        if self._queued_for != task:
            self._queued_for = task
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_done)

    def _backward_done(self) -> None:
        for i in list(self.loaded):
            self._drop(i, "backward")
        self.pending.clear()  # a prefetch past the first swapped block is never one

    def close(self) -> None:
        """Remove the hooks; the swapped weights stay in RAM (bringing them back would need the memory the swap
        saved)."""
        for handle in self.handles:
            handle.remove()
        for i in list(self.loaded):
            self._drop(i, "forward")
        self.pending.clear()
        self.handles = []


def setup_block_swap(cfg, model, device, transfer: Transfer | None = None) -> BlockSwap | None:
    """After the adapters are injected and before the denoiser is placed: park the last blocks in RAM."""
    count = cfg.performance.blocks_to_swap
    if not count:
        return None
    blocks = swappable(model.family, model.unet)
    check_count(model.family, count, len(blocks))
    swap = BlockSwap(blocks, count, transfer or Transfer(device))
    parked = swap.parked_ids()
    staying = sum(t.numel() * t.element_size() for t in [*model.unet.parameters(), *model.unet.buffers()]
                  if id(t) not in parked)
    log.info("block swap: %d of %d blocks in CPU RAM (%.2f GB), %.2f GB stay on the GPU", count, len(blocks),
             swap.ram_bytes / 1e9, staying / 1e9)
    return swap


def place_denoiser(denoiser: torch.nn.Module, device, swap: BlockSwap | None) -> None:
    """`denoiser.to(device)`, leaving the swapped blocks' frozen weights where the swap keeps them."""
    if swap is None:
        denoiser.to(device)
        return
    parked = swap.parked_ids()
    for tensor in [*denoiser.parameters(), *denoiser.buffers()]:
        if id(tensor) not in parked:
            tensor.data = tensor.data.to(device)
