"""`performance.weight_dtype`: the dtype the frozen base weights are kept in, and fp8 storage.

auto = bf16 on GPUs that have it, fp16 on other CUDA GPUs, fp32 on the CPU. fp8 keeps the weights of the
UNet's and text encoders' linear and convolution layers as float8 (e4m3) and computes in bf16/fp16 (fp32 on
the CPU), the idea of QLoRA and of kohya's --fp8_base: the frozen base shrinks to a quarter of fp32 while the
LoRA weights and the optimizer stay fp32. The VAE computes in bf16 where the model does, else in fp32: it
runs only to fill the latent cache and for previews, and SDXL's VAE overflows to NaN in fp16.

How fp8 layers compute: a torch parametrization (torch.nn.utils.parametrize) stores the fp8 tensor and hands
each forward a fresh upcast copy. We do not use diffusers' `apply_layerwise_casting`, the obvious choice: its
hook swaps `param.data` back to fp8 after the forward, and autograd keeps that same parameter for the
backward, so any backward through it fails ("Promotion for Float8 Types is not supported", diffusers 0.42).
The upcast copies autograd would keep for the backward (the whole model in bf16 again) are replaced by a
handle on the fp8 weight while a training step runs (`fp8_saved_weights`), so fp8 also saves memory in
training, not only at rest.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch
from torch.nn.utils import parametrize

from trainer.shared.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FP8 = torch.float8_e4m3fn
# The first and last layers and the embeddings of the conditioning are tiny and sensitive: keep them exact.
# The DiTs' time embedders (FLUX.1's time_text_embed, klein's time_guidance_embed, Z-Image's t_embedder) are
# also their first parameters, which diffusers' `model.dtype` reads and its pipelines cast latents to: in fp8
# a pipeline would feed the transformer fp8 latents.
FP8_SKIP = ("conv_in", "conv_out", "time_embedding", "add_embedding", "time_embed", "class_embedding",
            "time_text_embed", "time_guidance_embed", "t_embedder")


@dataclass(frozen=True)
class Precision:
    name: str               # fp32 | bf16 | fp16 | fp8, after resolving auto
    compute: torch.dtype    # what the layers compute in; every frozen tensor that is not fp8 is kept in it

    @property
    def fp8(self) -> bool:
        return self.name == "fp8"

    @property
    def vae(self) -> torch.dtype:
        """bf16 has fp32's range, so a bf16 VAE stays finite; fp16 overflows (SDXL's VAE to NaN): fp32 then."""
        return torch.bfloat16 if self.compute == torch.bfloat16 else torch.float32

    def vae_dtype_for(self, model: torch.nn.Module, key: str) -> torch.dtype:
        return self.vae

    def dtype_for(self, model: torch.nn.Module, key: str) -> torch.dtype:
        """The dtype the parameter or buffer `key` of a UNet or text encoder is kept in."""
        if self.fp8 and is_fp8_weight(model, key):
            return FP8
        return self.compute


def resolve_precision(weight_dtype: str, device: torch.device | str, bf16_gpu: bool | None = None) -> Precision:
    """What `performance.weight_dtype` means on this device, or a ConfigError that says what will work.
    `bf16_gpu` answers for a GPU that is not here (planning); by default the GPU is asked."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    bf16_ok = cuda and (torch.cuda.is_bf16_supported() if bf16_gpu is None else bf16_gpu)
    gpu_half = torch.bfloat16 if bf16_ok else torch.float16
    if weight_dtype == "auto":
        return Precision("bf16" if bf16_ok else "fp16", gpu_half) if cuda else Precision("fp32", torch.float32)
    if weight_dtype == "fp8":
        if not hasattr(torch, "float8_e4m3fn"):
            raise ConfigError(f"performance.weight_dtype = \"fp8\" needs PyTorch 2.1 or newer (this is "
                              f"{torch.__version__})", "update PyTorch, or use weight_dtype = \"bf16\"")
        return Precision("fp8", gpu_half if cuda else torch.float32)
    if weight_dtype == "bf16" and cuda and not bf16_ok:
        raise ConfigError("performance.weight_dtype = \"bf16\" but this GPU has no bfloat16 support",
                          "use weight_dtype = \"fp16\" (or \"auto\", which picks it)")
    return Precision(weight_dtype, DTYPES[weight_dtype])


def is_fp8_weight(model: torch.nn.Module, key: str) -> bool:
    module_name, _, param = key.rpartition(".")
    if param != "weight" or any(part in FP8_SKIP for part in module_name.split(".")):
        return False
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return False
    return isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))


# The buffer a loader leaves on a layer whose fp8 weight came with a scale (a "scaled fp8" file): the layer's
# real weight is the fp8 tensor times it (trainer.models.streaming keeps both instead of re-quantising).
SCALE_BUFFER = "fp8_weight_scale"


class _Upcast(torch.nn.Module):
    """Parametrization: the stored fp8 weight, seen by the layer in the compute dtype (times its scale, when
    the file stored one: a scalar or one value per output row)."""

    def __init__(self, compute: torch.dtype, scale: torch.Tensor | None = None):
        super().__init__()
        self.compute = compute
        self.register_buffer("scale", scale, persistent=False)

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        upcast = _upcast(stored, self.compute, self.scale)
        _UPCASTS[id(upcast)] = (stored, self.compute, self.scale)
        weakref.finalize(upcast, _UPCASTS.pop, id(upcast), None)
        return upcast


def _upcast(stored: torch.Tensor, compute: torch.dtype, scale: torch.Tensor | None) -> torch.Tensor:
    upcast = stored.to(compute)
    if scale is None:
        return upcast
    per_row = scale.numel() > 1  # one value per output row, else one for the whole tensor
    return upcast * scale.to(compute).reshape((-1, *[1] * (stored.dim() - 1)) if per_row else ())


_UPCASTS: dict[int, tuple[torch.Tensor, torch.dtype, torch.Tensor | None]] = {}


def enable_fp8_compute(model: torch.nn.Module, compute: torch.dtype) -> int:
    """Make every layer whose weight was loaded as fp8 compute in `compute`; returns how many layers."""
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
              and not parametrize.is_parametrized(m) and m.weight.dtype == FP8]
    for layer in layers:
        scale = layer._buffers.pop(SCALE_BUFFER, None)  # moves into the parametrization, which applies it
        # unsafe: the stored tensor's dtype differs from what the layer sees, which is the point
        parametrize.register_parametrization(layer, "weight", _Upcast(compute, scale), unsafe=True)
    return len(layers)


def _pack(tensor: torch.Tensor):
    stored = _UPCASTS.get(id(tensor))
    if stored is not None:
        return ("fp8", *stored, None)
    base = tensor._base  # F.linear saves weight.t(), a view of the upcast
    stored = _UPCASTS.get(id(base)) if base is not None else None
    if stored is not None:
        return ("fp8", *stored, (tensor.size(), tensor.stride(), tensor.storage_offset()))
    return tensor


def _unpack(packed):
    if isinstance(packed, tuple) and packed[0] == "fp8":
        _, stored, dtype, scale, view = packed
        upcast = _upcast(stored, dtype, scale)
        return upcast if view is None else upcast.as_strided(*view)
    return packed


def fp8_saved_weights(enabled: bool):
    """While a training forward runs: autograd keeps the fp8 weight instead of its upcast copy and upcasts
    again in the backward (the same values: fp8 -> compute is exact)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)
