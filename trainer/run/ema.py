"""An exponential moving average (EMA) of the LoRA weights: lora.ema_decay, sampling.use_ema.

The average is diffusers' EMAModel over the trainable adapter parameters (its decay warms up as
(1 + step) / (10 + step) until it reaches lora.ema_decay, so early steps are not dominated by the zero-init
start). What we add: writing the averaged weights as an adapter file beside the trained one (NAME.ema.safetensors,
same kohya layout and metadata, checkpoints too), keeping the average in the resume state, and swapping it
into the model for previews.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from trainer.shared.run_folder import ema_path, is_ema_file  # noqa: F401  (the file names live with the run folder's)

STATE_COMPONENT = "ema"  # the resume snapshot's adapter file holds it as `ema::NNNNN` (one per parameter)


class LoraEma:
    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        from diffusers.training_utils import EMAModel

        self.params = params
        self.average = EMAModel(params, decay=decay, foreach=True)

    @classmethod
    def create(cls, cfg, params: list) -> LoraEma | None:
        """None when lora.ema_decay is 0 (off)."""
        return cls(params, cfg.lora.ema_decay) if cfg.lora.ema_decay else None

    def step(self) -> None:
        """After each optimizer step."""
        self.average.step(self.params)

    @contextlib.contextmanager
    def applied(self):
        """The averaged weights in the model for the duration (previews, writing the EMA file)."""
        self.average.store(self.params)
        self.average.copy_to(self.params)
        try:
            yield
        finally:
            self.average.restore(self.params)

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        """For the resume snapshot: the averages by parameter position, and the step count (the warm-up)."""
        tensors = {f"{i:05d}": p.detach().cpu() for i, p in enumerate(self.average.shadow_params)}
        tensors["step"] = torch.tensor(self.average.optimization_step)
        return {STATE_COMPONENT: tensors}

    def load(self, adapters: dict[str, dict[str, torch.Tensor]]) -> bool:
        """Restore from a snapshot's adapters; False when it has no average (the run had EMA off)."""
        saved = adapters.get(STATE_COMPONENT)
        if not saved or len(saved) - 1 != len(self.params):
            return False
        state = self.average.state_dict()
        state["optimization_step"] = int(saved["step"])
        state["shadow_params"] = [saved[f"{i:05d}"].to(p.device, p.dtype) for i, p in enumerate(self.params)]
        self.average.load_state_dict(state)
        return True


def resume_ema(ema: LoraEma | None, snapshot: Path, adapters: dict[str, dict[str, torch.Tensor]], sink) -> None:
    """Give a resumed run its average back from the snapshot the loop resumed from (its ADAPTERS)."""
    from trainer.shared import events as ev

    if ema and not ema.load(adapters):
        sink.emit(ev.Warning(message=f"the saved state {snapshot} has no EMA weights (lora.ema_decay was off "
                                     "or the adapter changed); the average starts again from the current weights",
                             hint="nothing to do; the EMA file catches up over about 1 / (1 - decay) steps"))
