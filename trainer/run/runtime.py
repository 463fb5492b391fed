"""Everything the loop trains with, set up once: accelerator, base model with adapters, precision, logs."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.lora.algorithms import peft_config
from trainer.lora.inject import adapter_state_dict, inject, load_adapter_state_dict
from trainer.models.load import BaseModel, family_of, load_base_model, released
from trainer.run.block_swap import place_denoiser, setup_block_swap
from trainer.run.sink import EventSink
from trainer.run.training_adapter import apply_adapter, check_adapter_file, distilled_warning
from trainer.shared import events as ev
from trainer.shared import faults
from trainer.shared.config import TrainConfig
from trainer.shared.errors import ConfigError

log = logging.getLogger("trainer")
SCALARS_PER_WRITE = 50


@dataclass
class Runtime:
    cfg: TrainConfig
    accelerator: object
    model: BaseModel
    sink: EventSink
    weight_dtype: torch.dtype
    unet_params: list
    te_params: list
    unet: torch.nn.Module = None       # what the loop calls (DDP-wrapped on several GPUs)
    text_encoders: list = field(default_factory=list)  # likewise, when the text encoders are trained
    # caption -> (hidden states, pooled): filled once before the first step, when the text encoders are
    # frozen and captions don't vary; this runtime is its one owner (the loop and the validator read it)
    text_cache: dict = field(default_factory=dict)
    log_dir: Path | None = None        # TensorBoard, main process only
    writer: object = None              # opened at the first write; closed by __exit__ on every path
    offload: object = None             # trainer.run.offload.Offload, once the caches are full
    block_swap: object = None          # trainer.run.block_swap.BlockSwap, with performance.blocks_to_swap
    scalars: list = field(default_factory=list)  # (step, {name: value}) not yet handed to TensorBoard
    threads_before: int = 0            # torch's thread count before _threads_for; given back on exit
    training_adapter: object = None    # trainer.run.training_adapter.TrainingAdapter (model.training_adapter)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.flush_scalars()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.block_swap is not None:
            self.block_swap.close()
        if self.threads_before:  # an in-process caller (tests, `serve`) gets its thread count back
            torch.set_num_threads(self.threads_before)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def trainable_params(self) -> list:
        return self.unet_params + self.te_params

    @property
    def text_cache_in_use(self) -> bool:
        return bool(self.text_cache)

    @property
    def plain(self) -> bool:
        """One process, no fp16 loss scaling: accelerate's optimizer wrapper and gradient clipping add
        nothing then but per-step cost (AcceleratedOptimizer.step probes for an optional package twice a
        step, accelerate 1.16), so the loop uses torch's directly."""
        return self.accelerator.num_processes == 1 and self.accelerator.scaler is None

    def prepare(self, optimizer):
        trained = [m for _, m in self.model.family.trained_encoders(self.model)] if self.te_params else []
        modules = [self.model.unet, *trained]
        extra = [] if self.plain else [optimizer]
        # accelerate would move the whole denoiser to the GPU, swapped blocks too: the swap placed it already
        placement = [self.block_swap is None] + [True] * (len(modules) - 1 + len(extra))
        prepared = self.accelerator.prepare(*modules, *extra, device_placement=placement)
        prepared = prepared if isinstance(prepared, tuple) else (prepared,)
        self.unet = prepared[0]
        if trained:  # the trained encoders wrapped (DDP), in their places among all of them
            wrapped = dict(zip(map(id, trained), prepared[1:len(modules)]))
            self.text_encoders = [wrapped.get(id(m), m) for m in self.model.text_encoders]
        return optimizer if self.plain else prepared[-1]

    def clip_gradients(self, max_norm: float) -> None:
        if self.plain:  # no sync: the norm stays on the device
            torch.nn.utils.clip_grad_norm_(self.trainable_params, max_norm)
        else:  # unscales fp16 gradients first, and knows DDP/FSDP
            self.accelerator.clip_grad_norm_(self.trainable_params, max_norm)

    def no_sync_unless(self, sync: bool):
        if sync or self.accelerator.num_processes == 1:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self.unet)

    def adapters(self) -> dict[str, dict[str, torch.Tensor]]:
        out = {"unet": adapter_state_dict(self.model.unet)}
        if self.te_params:
            for name, encoder in self.model.family.trained_encoders(self.model):
                out[name] = adapter_state_dict(encoder)
        return out

    def without_training_adapter(self):
        """Previews: the trained LoRA on the model as users will run it, without model.training_adapter."""
        return self.training_adapter.off() if self.training_adapter else contextlib.nullcontext()

    def mean_over_processes(self, values: torch.Tensor) -> torch.Tensor:
        """Losses averaged over all processes, so that every process sees a NaN and stops together
        (one process stopping alone would leave the others waiting for it forever)."""
        if self.accelerator.num_processes == 1:
            return values
        return self.accelerator.reduce(values.to(self.device), "mean")

    def agree(self, flags: list[bool]) -> list[bool]:
        """Each flag set if any process set it. A stop/sample/save request reaches one process (stdin, a
        signal); all must act on it at the same step, or one would wait for the others forever."""
        if self.accelerator.num_processes == 1:
            return flags
        summed = self.accelerator.reduce(torch.tensor(flags, dtype=torch.float32, device=self.device), "sum")
        return [bool(v > 0) for v in summed.tolist()]

    def fingerprint(self) -> str:
        """A hash of the trained weights: data-parallel ranks must agree on it bit for bit."""
        import hashlib

        digest = hashlib.sha256()
        for component, tensors in sorted(self.adapters().items()):
            for key in sorted(tensors):
                digest.update(f"{component}/{key}".encode())
                digest.update(tensors[key].detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def load_adapters(self, adapters: dict[str, dict[str, torch.Tensor]]) -> None:
        load_adapter_state_dict(self.model.unet, adapters["unet"])
        for name, encoder in self.model.family.trained_encoders(self.model):
            if name in adapters:
                load_adapter_state_dict(encoder, adapters[name])

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        """Buffered: each add_scalar wakes TensorBoard's writer thread, which cost ~4 ms a step on 2 cores."""
        if self.log_dir is not None:
            self.scalars.append((step, values))
            if self.writer is None or len(self.scalars) >= SCALARS_PER_WRITE:  # opened after step 1's event
                self.flush_scalars()

    def flush_scalars(self) -> None:
        if not self.scalars:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter  # here: no TensorBoard import before step 1

            self.writer = SummaryWriter(log_dir=str(self.log_dir))
        for step, values in self.scalars:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
        self.scalars.clear()


def setup_runtime(cfg: TrainConfig, run_dir: Path, sink: EventSink, texts: list[str] | None = None) -> Runtime:
    """`texts`: every caption and prompt the run will encode, when they are known before it starts (captions
    that do not vary): a family that encodes before its denoiser loads (FLUX.1's T5) encodes them and frees
    its text encoders first, so they never share memory with the denoiser."""
    faults.point("connect")  # (the tests' crash of one process before a launch's processes connect)
    accelerator = _accelerator(cfg)
    sink.enabled = accelerator.is_main_process
    torch.manual_seed(cfg.schedule.seed)
    family = family_of(cfg.model.path)
    family.check_config(cfg)  # the family's own limits, before the model loads
    adapter_file = check_adapter_file(cfg, family)  # model.training_adapter, likewise
    files = {"vae": cfg.model.vae, "clip_l": cfg.model.clip_l, "t5": cfg.model.t5,
             "text_encoder": cfg.model.text_encoder}
    model = load_base_model(cfg.model.path, cfg.model.prediction_type, cfg.performance.weight_dtype,
                            accelerator.device, files, defer_denoiser=True)
    model.train_guidance = cfg.model.train_guidance
    warnings = model.family.training_warnings(model, cfg.model.training_adapter)
    if adapter_file and (message := distilled_warning(model.family, model.variant)):
        warnings.append(message)
    for message in warnings:
        sink.emit(ev.Warning(message=message, hint="nothing stops the run; the message says what to change"))
    if cfg.performance.blocks_to_swap and accelerator.num_processes > 1:
        raise ConfigError("config key 'performance.blocks_to_swap' is set for a run on several GPUs",
                          "block swap runs on one GPU: set performance.blocks_to_swap = 0 or train on one process")
    if model.pending_denoiser is not None:
        _encode_first(cfg, model, accelerator.device, texts, sink)
    weight_dtype = model.precision.compute  # what inputs are cast to; fp8 layers upcast to it themselves
    threads_before = _threads_for(model, accelerator.device)
    unet_params, te_params = add_adapters(cfg, model)
    training_adapter = apply_adapter(model, adapter_file) if adapter_file else None  # after: never trained
    swap = setup_block_swap(cfg, model, accelerator.device)  # after both adapters: their frozen parts swap too
    _place(model, accelerator.device, unet_params + te_params, swap)
    _speedups(cfg, model, sink, accelerator.device, bool(te_params))
    rt = Runtime(cfg, accelerator, model, sink, weight_dtype, unet_params, te_params, unet=model.unet,
                 log_dir=Path(run_dir) / "logs" if accelerator.is_main_process else None,
                 threads_before=threads_before, block_swap=swap, training_adapter=training_adapter)
    log.info("model: %s (%s, %s); %d LoRA tensors; device %s, frozen weights %s, mixed precision %s",
             model.description, model.arch, model.prediction_type, len(unet_params) + len(te_params),
             accelerator.device, model.precision.name, accelerator.mixed_precision)
    return rt


def _encode_first(cfg: TrainConfig, model: BaseModel, device, texts: list[str] | None, sink: EventSink) -> None:
    """Encode TEXTS, let the text encoders go (unless they are trained), then load the denoiser."""
    if texts is None:
        sink.emit(ev.Warning(message="captions vary from step to step (shuffled tags or dropout), so the text "
                             "encoders stay in memory beside the denoiser",
                             hint="turn shuffle_tags, caption_dropout and tag_dropout off to train in less memory"))
    else:
        model.family.text.encode_ahead(model, texts, device, cfg.dataset.max_token_length)
        keep = cfg.lora.train_text_encoder  # a trained CLIP-L stays; T5's states are in model.encoded
        for index, encoder in enumerate(model.text_encoders):
            if not (keep and index == 0):
                encoder.to("meta")  # its memory is given back now, before the denoiser loads
        from trainer.models.streaming import return_freed_memory

        return_freed_memory()
        log.info("%d captions and prompts encoded; text encoders released before the %s loads",
                 len(model.encoded), model.family.denoiser)
    model.load_denoiser(keep_in_ram=bool(cfg.performance.blocks_to_swap))  # the swap places it, in part


def _threads_for(model: BaseModel, device) -> int:
    """A tiny model on a CPU trains fastest on one thread: its ops are too small to split, and OpenMP's
    waiting threads only cost (2 cores, 64 px UNet forward: 6.6 ms on one thread, 6.9 ms on two when idle,
    18-360 ms on two while other programs, or other torch processes, keep the cores busy)."""
    before = torch.get_num_threads()
    if device.type == "cpu" and model.is_tiny:
        torch.set_num_threads(1)
    return before


def _accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    device = cfg.performance.device
    use_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    precision = cfg.performance.mixed_precision
    if use_cpu:
        precision = "no"  # CPU autocast to bf16 is slow and lossy; the tiny models don't need it
    elif precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Accelerator(cpu=use_cpu, mixed_precision=precision)


def add_adapters(cfg: TrainConfig, model: BaseModel) -> tuple[list, list]:
    """Adapter layers on the modules the family targets for lora.targets (and on its text encoders when they
    are trained); returns (denoiser parameters, text-encoder parameters), all trainable."""
    targets = model.family.lora
    unet_params = inject(model.unet, peft_config(cfg.lora, targets.denoiser[cfg.lora.targets], targets.conv,
                                                 targets.blocks))
    te_params: list = []
    if cfg.lora.train_text_encoder:
        for _, encoder in model.family.trained_encoders(model):
            te_params += inject(encoder, peft_config(cfg.lora, targets.text_encoder))
    return unet_params, te_params


def _place(model: BaseModel, device, trainable: list, swap) -> None:
    # The frozen weights were loaded in performance.weight_dtype (the VAE in fp32); the LoRA weights stay
    # fp32 so that small updates are not rounded away (peft creates them in the base layer's dtype).
    place_denoiser(model.unet, device, swap)
    for module in [*model.text_encoders, model.vae]:
        if not released(module):
            module.to(device)
    for p in trainable:
        p.data = p.data.float()
    model.unet.train()
    for encoder in model.text_encoders:
        encoder.train(bool(model.text_encoders and any(p.requires_grad for p in encoder.parameters())))


def _speedups(cfg: TrainConfig, model: BaseModel, sink: EventSink, device, train_te: bool) -> None:
    if cfg.performance.attention == "xformers":
        try:
            if device.type != "cuda":
                raise RuntimeError("xformers needs a CUDA GPU")
            model.unet.enable_xformers_memory_efficient_attention()
        except Exception as exc:  # ImportError, or xformers built for another torch
            sink.emit(ev.Warning(message=f"xformers unavailable ({exc}); using PyTorch SDPA attention",
                                 hint="SDPA is as fast on recent PyTorch; set performance.attention = \"sdpa\""))
    from trainer.run.accel import channels_last, compile_blocks

    if channels_last(model.unet, device):
        log.info("UNet in channels-last memory format")
    if cfg.performance.compile:
        log.info("torch.compile: %d transformer blocks of the UNet (compiled at the first step)",
                 compile_blocks(model.unet))
    if cfg.performance.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        if train_te:
            for encoder in model.text_encoders:
                # transformers 5 renamed it; older releases only have the first name
                enable = getattr(encoder, "activation_checkpointing_enable", None) or \
                    encoder.gradient_checkpointing_enable
                enable()
