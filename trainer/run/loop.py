"""The training loop, readable top to bottom.

    load the base model -> add LoRA -> read the dataset and fill caches -> optimizer and LR schedule
    -> (resume) -> baseline samples -> for each step: noise, predict, loss, backward, step
    -> progress / samples / checkpoints / stdin commands -> final adapter -> done

Everything the loop writes lives in the run folder. Only the main process writes files and events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from trainer.data.masks import check_masks, no_masks_warning
from trainer.data.records import adopt_caption_trigger, load_records, unreadable_captions_warning
from trainer.lora.adalora import AdaLoraBudget
from trainer.lora.algorithms import block_lr_groups, lora_up_ids
from trainer.lora.init_from import load_init_weights, read_init_file
from trainer.models.precision import fp8_saved_weights
from trainer.run.accel import CompileClock, attention_kernels, to_device
from trainer.run.batches import Batch, Batches
from trainer.run.control import Control
from trainer.run.ema import resume_ema
from trainer.run.encode import encode_text, pad_chunks, sample_latents
from trainer.run.failures import explained
from trainer.run.offload import Offload
from trainer.run.optim import build_lr_scheduler, build_optimizer, param_groups, prodigy_lr_warning
from trainer.run.reporting import Reporter
from trainer.run.runtime import Runtime, setup_runtime
from trainer.run.saving import Saver
from trainer.run.sink import EventSink
from trainer.run.state import Position, TrainingState, latest_snapshot, load_state
from trainer.run.state_check import check_fits, damaged
from trainer.run.training_adapter import check_same_file
from trainer.run.validation import Validator, split_validation
from trainer.shared import events as ev
from trainer.shared import faults
from trainer.shared.config import TrainConfig
from trainer.shared.steps import total_steps

log = logging.getLogger("trainer")


def train(cfg: TrainConfig, run_dir: Path, sink: EventSink, control: Control, resume: bool = False,
          records: list | None = None, on_resumed: Callable[[], None] | None = None) -> Path:
    """on_resumed: called once a resume's saved state has loaded (`resume --set` writes the config then)."""
    items = load_records(cfg) if records is None else records  # before the model: errors come at once
    items, held_out = split_validation(cfg, items)
    if warning := unreadable_captions_warning(items):
        sink.emit(warning)
    check_masks(cfg, items)
    if warning := no_masks_warning(cfg, items):
        sink.emit(warning)
    adopted = adopt_caption_trigger(cfg, items)
    if adopted:
        sink.emit(ev.Warning(message=adopted, hint="set saving.trigger_phrase and sampling.prompts to choose"))
    with explained(cfg, run_dir):  # out of GPU memory or disk space at any point: what to change, how much
        return _train(cfg, run_dir, sink, control, resume, items, held_out, on_resumed)


def _train(cfg: TrainConfig, run_dir: Path, sink: EventSink, control: Control, resume: bool,
           items: list, held_out: list, on_resumed: Callable[[], None] | None) -> Path:
    init = read_init_file(cfg, sink)  # before the adapter is built: it adopts the file's rank
    from trainer.run.caching import texts_known_ahead

    texts = texts_known_ahead(cfg, items + held_out)
    with setup_runtime(cfg, run_dir, sink, texts) as rt:  # closes the TensorBoard log on every way out
        load_init_weights(rt, init)
        rt.model.family.objective.prepare(rt.model, cfg.loss, sink)
        if resume and rt.accelerator.is_main_process:
            remove_stale_temp_files(run_dir)
        data = Batches(cfg, items, rt.accelerator.process_index, rt.accelerator.num_processes)
        _fill_caches(rt, data)
        state = _training_state(rt, total_steps(cfg, data.batches_per_epoch()))
        saver = Saver(cfg, rt, run_dir, items, sink)
        saver.validator = _validator(rt, held_out)
        rt.offload = Offload.after_caching(rt, data, control.listening)  # caches full: encoders give memory back
        snapshot = _resume(rt, run_dir, state) if resume else None
        if resume and on_resumed:
            on_resumed()
        saver.started_at = state.pos.started_at
        # lora.algorithm = "adalora" only; after the resume: its schedule starts from the resumed step
        saver.budget = AdaLoraBudget.attach(cfg, rt, state.optimizer, state.total, state.pos.step)
        if snapshot is not None:  # what rides beside the adapter in a snapshot: the EMA, AdaLoRA's scores
            resume_ema(saver.ema, *snapshot, sink)
            if saver.budget:
                saver.budget.load(snapshot[1])
        sink.emit(ev.Started(run_dir=str(run_dir), total_steps=state.total, arch=rt.model.arch,
                             device=str(rt.device), config=cfg.to_dict(), resumed_from=state.pos.step))
        if state.pos.step == 0 and cfg.sampling.at_start and cfg.sampling.every_n_steps:
            saver.sample(0)
        reporter = Reporter(rt, state.total)
        stopped = _run_steps(rt, data, state, saver, control, reporter)
        reporter.flush(saver.saved_checkpoints)  # a NaN in the last steps stops before the final save
        adapter = saver.final(state)
    sink.emit(ev.Done(adapter=str(adapter), step=state.pos.step, stopped_early=stopped))
    _log_fingerprint(rt)
    return adapter


def _training_state(rt: Runtime, total: int) -> TrainingState:
    cfg = rt.cfg
    lora_up = lora_up_ids([rt.model.unet, *rt.model.text_encoders])
    groups = block_lr_groups(cfg, param_groups(cfg, rt.unet_params, rt.te_params, lora_up), rt.model.unet,
                             rt.model.family.lora.blocks)
    optimizer = build_optimizer(cfg, groups, rt.device)
    if warning := prodigy_lr_warning(cfg):
        rt.sink.emit(warning)
    lr_scheduler = build_lr_scheduler(cfg, optimizer, total)
    optimizer = rt.prepare(optimizer)
    # each process its own noise and timesteps (accelerate's device_specific seeding: seed + process index);
    # with one seed for all, same-shaped batches on different GPUs got identical noise. One process: unchanged.
    noise_gen = torch.Generator().manual_seed(cfg.schedule.seed + rt.accelerator.process_index)
    pos = Position(step=0, epoch=0, batch_in_epoch=0, started_at=time.time())
    if rt.training_adapter:  # resume checks that the config still names this very file
        pos.extra["training_adapter"] = rt.training_adapter.file.identity()
    return TrainingState(optimizer, lr_scheduler, noise_gen, pos, total)


def _log_fingerprint(rt: Runtime) -> None:
    acc = rt.accelerator
    if acc.num_processes > 1:  # every rank says what it ended with; they must match (DDP keeps them in step)
        log.info("process %d of %d: adapter fingerprint %s", acc.process_index, acc.num_processes,
                 rt.fingerprint())


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files of writes a crash interrupted: hidden `.NAME.*.tmp`, never mistaken for results."""
    for stale in Path(run_dir).rglob(".*.tmp"):
        if stale.is_file():
            stale.unlink(missing_ok=True)


def _fill_caches(rt: Runtime, data: Batches) -> None:
    from trainer.run.caching import fill_latent_cache, fill_text_cache

    fill_latent_cache(data, rt.model.vae, rt.sink)
    if not rt.te_params and rt.cfg.performance.cache_text_embeddings and not data.captions_vary:
        fill_text_cache(data, rt.model, rt.device, rt.text_cache)


def _validator(rt: Runtime, held_out: list) -> Validator | None:
    if not held_out or not rt.cfg.validation.every_n_steps:
        return None
    from trainer.run.caching import fill_latent_cache, fill_text_cache

    data = Batches(rt.cfg, held_out)  # every process holds them all; only the main one computes
    fill_latent_cache(data, rt.model.vae, rt.sink)
    if rt.text_cache_in_use:  # then the text encoders may leave memory: their captions are needed now
        fill_text_cache(data, rt.model, rt.device, rt.text_cache)
    return Validator(rt, data, _conditioning)


def _resume(rt: Runtime, run_dir: Path, state: TrainingState) -> tuple[Path, dict] | None:
    """Back to the latest snapshot; (its folder, its saved tensors by component), or None without one."""
    snapshot = latest_snapshot(run_dir)
    if snapshot is None:
        rt.sink.emit(ev.Warning(message=f"no saved training state in {run_dir}; starting from step 0"))
        return None
    loaded = load_state(snapshot)
    check_fits(snapshot, loaded, rt.adapters(), state.optimizer, state.total)
    try:
        rt.load_adapters(loaded.adapters)
        state.restore(loaded, rt.accelerator.process_index)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # what the checks above did not foresee
        raise damaged(snapshot, f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    check_same_file(state.pos.extra.get("training_adapter"),
                    rt.training_adapter.file if rt.training_adapter else None, state.pos.step)
    return snapshot, loaded.adapters


def _run_steps(rt: Runtime, data: Batches, state: TrainingState, saver: Saver, control: Control,
               reporter: Reporter) -> bool:
    """Train until `state.total` optimizer steps or a stop request. Returns True if stopped early."""
    accumulation, micro, pos, step_loss = rt.cfg.schedule.gradient_accumulation, 0, state.pos, 0.0
    compile_clock = CompileClock(rt.cfg.performance.compile, rt.device)
    while pos.step < state.total:
        for batch in data.epoch(pos.epoch, start=pos.batch_in_epoch):
            micro += 1
            sync = micro % accumulation == 0
            faults.current_step = pos.step + 1
            compile_clock.start()
            step_loss = step_loss + _micro_step(rt, batch, state.noise_gen, sync, accumulation) / accumulation
            compile_clock.stop()
            faults.point("step")
            pos.batch_in_epoch += 1
            if not sync:
                continue
            _optimizer_step(rt, state)
            if saver.ema:
                saver.ema.step()
            pos.step += 1
            reporter.add(pos.step, pos.epoch, step_loss, state.lr_scheduler.get_last_lr()[0])
            step_loss = 0.0
            if reporter.full:  # before due(): a front end may answer this step's progress with a stop
                reporter.flush(saver.saved_checkpoints)
            due = saver.due(state, control)
            if due:  # files and stops only after the losses so far proved finite
                reporter.flush(saver.saved_checkpoints)
            if saver.act(state, due):
                return pos.step < state.total
            if pos.step >= state.total:
                return False
        pos.epoch, pos.batch_in_epoch = pos.epoch + 1, 0
    return False


def _micro_step(rt: Runtime, batch: Batch, noise_gen, sync: bool, accumulation: int) -> torch.Tensor:
    """Forward and backward of one micro-batch; its loss stays on the device (trainer/reporting.py)."""
    model, cfg = rt.model, rt.cfg
    with rt.no_sync_unless(sync), rt.accelerator.autocast(), fp8_saved_weights(model.precision.fp8), \
            attention_kernels(rt.device):
        latents = _latents(rt, batch, noise_gen)
        objective = model.family.objective  # the family's: DDPM epsilon/v, flow matching, ...
        noisy, noise, timesteps = objective.noise(model, latents, noise_gen, cfg.loss)
        pred = model.family.predict(rt.unet, noisy.to(rt.weight_dtype), timesteps,
                                    _conditioning(rt, batch, latents))
        target = objective.target(model, latents, noise, timesteps)
        loss = (objective.loss(model, pred, target, timesteps, cfg.loss, batch.masks)
                * to_device(batch.loss_weights, pred.device)).mean()
        rt.accelerator.backward(loss / accumulation)
    return loss.detach()


def _latents(rt: Runtime, batch: Batch, noise_gen) -> torch.Tensor:
    vae = rt.model.vae
    if batch.latent_params is not None:
        params = to_device(batch.latent_params, rt.device)
    else:
        from trainer.run.encode import latent_distribution

        params = latent_distribution(vae, batch.pixels.to(rt.device))
    return sample_latents(vae, params, noise_gen, rt.model.family).float()


def _conditioning(rt: Runtime, batch: Batch, latents: torch.Tensor) -> dict:
    """The denoiser's conditioning for `batch` (hidden states, and what else the family adds), from the text
    cache when the captions are in it."""
    model, device = rt.model, rt.device
    if rt.text_cache_in_use and all(c in rt.text_cache for c in batch.captions):  # held-out ones aren't
        cached = [rt.text_cache[c] for c in batch.captions]
        hidden = to_device(pad_chunks(model, [h for h, _ in cached], rt.text_cache[""][0]), device)
        pooled = to_device(torch.stack([p for _, p in cached]), device) if cached[0][1] is not None else None
    else:
        hidden, pooled = encode_text(model, batch.captions, device, rt.text_encoders, rt.cfg.model.clip_skip,
                                     rt.cfg.dataset.max_token_length)
    return model.family.conditioning(model, hidden, pooled, batch, latents, rt.weight_dtype)


def _optimizer_step(rt: Runtime, state: TrainingState) -> None:
    if rt.cfg.optimizer.max_grad_norm:
        rt.clip_gradients(rt.cfg.optimizer.max_grad_norm)
    state.optimizer.step()
    state.lr_scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
