"""What the loop leaves on disk: preview samples, periodic checkpoints, resumable state, the final adapter.

Only the main process writes. A checkpoint is a kohya-layout adapter in checkpoints/ plus a state snapshot
in state/; both are written atomically, so a crash at any moment leaves the last good ones loadable.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.data.captions import split_tags
from trainer.export.kohya import to_kohya
from trainer.export.metadata import TrainingFacts, build_metadata
from trainer.export.save import SAVE_DTYPES, NonFiniteWeights, write_safetensors
from trainer.lora.algorithms import exported_alpha, module_scales
from trainer.run.control import Control
from trainer.run.ema import LoraEma, ema_path
from trainer.run.failures import Diverged
from trainer.run.runtime import Runtime
from trainer.run.sampling import render_samples
from trainer.run.sink import EventSink
from trainer.run.state import Position, TrainingState, save_state
from trainer.shared import events as ev
from trainer.shared import faults
from trainer.shared.config import TrainConfig
from trainer.shared.run_folder import adapter_path, checkpoint_path, checkpoints_in


@dataclass
class Due:
    """What the saver does after this step; the same on every process (the requests are agreed)."""

    validate: bool
    sample: bool
    save: bool
    stop: bool

    def __bool__(self) -> bool:
        return self.validate or self.sample or self.save or self.stop


class Saver:
    def __init__(self, cfg: TrainConfig, rt: Runtime, run_dir: Path, items: list, sink: EventSink):
        self.cfg, self.rt, self.run_dir, self.items, self.sink = cfg, rt, Path(run_dir), items, sink
        self.main = rt.accelerator.is_main_process
        self.validator = None  # trainer.run.validation.Validator when images are held out
        self.ema = LoraEma.create(cfg, rt.trainable_params)  # None unless lora.ema_decay is set
        self.budget = None  # trainer.lora.adalora.AdaLoraBudget with lora.algorithm = "adalora"
        self.started_at = time.time()
        # checkpoints of earlier sessions of this run count too: for keep_last, and as "the last good one"
        self.saved_checkpoints = checkpoints_in(self.run_dir, cfg.saving.output_name)

    def due(self, state: TrainingState, control: Control) -> Due:
        """Validation, samples and checkpoints that are due or asked for after this step, and a stop."""
        s, total = state.pos.step, state.total
        every_sample, every_save = self.cfg.sampling.every_n_steps, self.cfg.saving.every_n_steps
        sample, save, stop = self.rt.agree([control.take("sample"), control.take("save"), control.stop_requested])
        return Due(validate=bool(self.validator and self.validator.due(s, total)),
                   sample=sample or bool(every_sample and s % every_sample == 0),
                   save=save or bool(every_save and s % every_save == 0 and s < total), stop=stop)

    def act(self, state: TrainingState, due: Due) -> bool:
        """Does what `due` says; True if the run should stop now."""
        if due.validate:
            self.validator.run(state.pos.step)
        if due.sample:
            self.sample(state.pos.step)
        if due.save:
            self.checkpoint(state)
        return due.stop

    def sample(self, step: int) -> None:
        if self.main:
            self._render(step)
        self.rt.accelerator.wait_for_everyone()

    def _render(self, step: int) -> None:
        offload = self.rt.offload
        use_ema = self.ema.applied() if self.ema and self.cfg.sampling.use_ema else contextlib.nullcontext()
        with offload.for_previews() if offload else contextlib.nullcontext(True) as available, use_ema, \
                self.rt.without_training_adapter():
            if not available:
                self.sink.emit(ev.Warning(message="no preview: previews are off for this run, so the text "
                                                  "encoders and VAE were unloaded to save memory",
                                          hint="set sampling.every_n_steps above 0 to keep previews possible"))
                return
            out = self.run_dir / "samples"
            for index, (path, prompt, seed) in enumerate(
                    render_samples(self.rt.model, self.cfg.sampling, self.cfg.dataset.resolution, step, out,
                                   self.rt.device, self.cfg.model.clip_skip, self.cfg.dataset.max_token_length)):
                self.sink.emit(ev.Sample(path=str(path), prompt=prompt, seed=seed, step=step, index=index))
                faults.point("sample")

    def checkpoint(self, state: TrainingState) -> None:
        pos, noise_states = state.pos, self._noise_states(state.noise_gen)
        if self.main:
            path = self.write_adapter(checkpoint_path(self.run_dir, self.cfg.saving.output_name, pos.step), pos)
            save_state(self.run_dir, state, self._state_adapters(pos), noise_states)
            self.saved_checkpoints = [p for p in self.saved_checkpoints if p != path] + [path]
            self._prune_checkpoints()
            self.sink.emit(ev.Checkpoint(path=str(path), step=pos.step))
        self.rt.accelerator.wait_for_everyone()

    def final(self, state: TrainingState) -> Path:
        path = adapter_path(self.run_dir, self.cfg.saving.output_name)
        pos, noise_states = state.pos, self._noise_states(state.noise_gen)
        if self.main:  # adapter first: its checks (finite, fits the save dtype) must pass before the state
            self.write_adapter(path, pos)
            save_state(self.run_dir, state, self._state_adapters(pos), noise_states)
        self.rt.accelerator.wait_for_everyone()
        return path

    def _noise_states(self, noise_gen: torch.Generator) -> list[torch.Tensor]:
        """Every process's noise-generator state, by process index, so that a resume gives each process its
        own stream back. A collective: every process calls it."""
        acc = self.rt.accelerator
        if acc.num_processes == 1:
            return [noise_gen.get_state()]
        # int32 on the device: NCCL gathers only device tensors, and every backend handles int32
        gathered = acc.gather(noise_gen.get_state().to(acc.device, torch.int32)[None])
        return [row.to("cpu", torch.uint8) for row in gathered]

    def finite_adapters(self, pos: Position) -> dict[str, dict[str, torch.Tensor]]:
        """The trained weights, refused if any is NaN/inf: no file ever holds a diverged adapter."""
        adapters = self.rt.adapters()
        if not all(torch.isfinite(t).all() for sd in adapters.values() for t in sd.values()):
            raise Diverged(pos.step, self.saved_checkpoints, "the LoRA weights became NaN/inf")
        return adapters

    def _state_adapters(self, pos: Position) -> dict[str, dict[str, torch.Tensor]]:
        extras = [part.state() for part in (self.ema, self.budget) if part]  # each its own component
        return self.finite_adapters(pos) | {k: v for extra in extras for k, v in extra.items()}

    def write_adapter(self, path: Path, pos: Position) -> Path:
        """The adapter at `path` and, with lora.ema_decay set, its average beside it (trainer.run.ema)."""
        written = self._write_one(path, pos)
        if self.ema:
            with self.ema.applied():
                self._write_one(ema_path(path), pos)
        return written

    def _write_one(self, path: Path, pos: Position) -> Path:
        model = self.rt.model
        tensors = to_kohya(self.finite_adapters(pos), model.arch, dict(model.unet.config), self._scales(),
                           SAVE_DTYPES[self.cfg.saving.dtype])
        try:
            return write_safetensors(path, tensors, build_metadata(self._facts(pos)))
        except NonFiniteWeights as exc:  # finite in fp32, too large for the save dtype
            what = f"the LoRA weights grew too large for saving.dtype = \"{self.cfg.saving.dtype}\""
            raise Diverged(pos.step, self.saved_checkpoints, what) from exc

    def _scales(self) -> dict[str, dict[str, tuple[int, float]]]:
        model = self.rt.model
        scales = {"unet": module_scales(model.unet)}
        for name, encoder in zip(model.family.text_encoders, model.text_encoders):
            scales[name] = module_scales(encoder)
        return scales

    def _facts(self, pos: Position) -> TrainingFacts:
        c, m = self.cfg, self.rt.model
        lc = c.lora
        conv_rank, conv_alpha = lc.conv_rank or lc.rank, lc.conv_alpha or lc.alpha
        return TrainingFacts(
            arch=m.arch, prediction_type=m.prediction_type, rank=lc.rank, rslora=lc.rslora,
            alpha=exported_alpha(lc.alpha, lc.rank, lc.rslora), conv_rank=conv_rank,
            conv_alpha=exported_alpha(conv_alpha, conv_rank, lc.rslora),
            targets=c.lora.targets, dora=c.lora.dora, algorithm=c.lora.algorithm,
            output_name=c.saving.output_name,
            base_model=Path(c.model.path).name, resolution=c.dataset.resolution, steps=pos.step,
            epoch=pos.epoch + 1, lr=c.optimizer.lr, text_encoder_lr=c.optimizer.text_encoder_lr,
            train_text_encoder=c.lora.train_text_encoder,
            num_train_images=sum(r.subset.repeats for r in self.items) * c.dataset.repeats,
            started_at=self.started_at, seed=c.schedule.seed, optimizer=c.optimizer.name,
            lr_scheduler=c.schedule.lr_scheduler, batch_size=c.schedule.batch_size,
            trigger_phrase=c.saving.trigger_phrase, clip_skip=c.model.clip_skip,
            zero_terminal_snr=bool(m.noise_scheduler.config.get("rescale_betas_zero_snr")),
            tag_frequency=self._tag_frequency(),
            config_toml=c.to_toml(), base_config=m.config_name,
            training_adapter=Path(c.model.training_adapter).name if c.model.training_adapter else "")

    def _tag_frequency(self) -> dict[str, dict[str, int]]:
        """kohya's form: {subset folder: {tag: count}}, which A1111 shows in the LoRA's card."""
        out: dict[str, Counter] = {}
        for r in self.items:
            out.setdefault(r.subset.folder.name, Counter()).update(split_tags(r.caption))
        return {name: dict(counts.most_common()) for name, counts in out.items()}

    def _prune_checkpoints(self) -> None:
        keep = self.cfg.saving.keep_last
        while keep and len(self.saved_checkpoints) > keep:
            old = self.saved_checkpoints.pop(0)
            old.unlink(missing_ok=True)
            ema_path(old).unlink(missing_ok=True)
