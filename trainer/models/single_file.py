"""Load an A1111/civitai-style single-file checkpoint offline with diffusers' single-file machinery.

diffusers converts the original key layout; the configs come from our JSON folders in assets/configs and
the tokenizers from assets/, so nothing is fetched from a hub. Legacy pickles are read safely first
(weights_only) and handed over as a state dict, so diffusers never unpickles anything itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from trainer.errors import ModelFileError
from trainer.models.assets import load_tokenizer
from trainer.models.safe_load import read_pickle_checkpoint


def load_single_file(path: Path, config_folder: Path, arch: str, prediction_type: str,
                     dtype: torch.dtype = torch.float32) -> dict:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    os.environ["HF_HUB_OFFLINE"] = "1"
    source = str(path)
    if path.suffix.lower() != ".safetensors":
        source = _pickle_as_safetensors(path)
    kwargs = {"tokenizer": load_tokenizer()}
    if arch == "sdxl":
        cls = StableDiffusionXLPipeline
        kwargs["tokenizer_2"] = load_tokenizer(second=True)
    else:
        cls = StableDiffusionPipeline
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        pipe = cls.from_single_file(source, config=str(config_folder), local_files_only=True,
                                    torch_dtype=dtype, **kwargs)
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        raise ModelFileError(f"{path} could not be loaded as {arch}: {str(exc)[:300]}",
                             "the file's weights don't fit the detected architecture; it may be damaged "
                             "or a merge of another kind") from None
    finally:
        if source != str(path):
            Path(source).unlink(missing_ok=True)
    return {name: getattr(pipe, name) for name in
            ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
            if getattr(pipe, name, None) is not None}


def _pickle_as_safetensors(path: Path) -> str:
    # diffusers would torch.load() the file itself; we load it with weights_only=True and hand over a
    # temporary safetensors copy instead, so no pickle code can run.
    import tempfile

    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in read_pickle_checkpoint(path).items() if isinstance(v, torch.Tensor)}
    fd, tmp = tempfile.mkstemp(suffix=".safetensors", prefix="lora-studio-ckpt-")
    os.close(fd)
    save_file(_unshare(state), tmp)
    return tmp


def _unshare(state: dict) -> dict:
    seen, out = set(), {}
    for key, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out
