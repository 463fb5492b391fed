"""InvokeAI's install probe for kohya-layout Stable Diffusion LoRA files, as a rule our export and verify follow.

InvokeAI files a LoRA under a base model before it installs it, and refuses a file it cannot place. For SD
files it reads one "token-vector length" (read from invokeai/backend/model_manager/util/model_util.py,
`lora_token_vector_length`, and configs/lora.py):

- only some layers are read: the UNet's cross-attention key/value projections (`…_attn2_to_k`,
  `…_attn2_to_v`) and the text encoders' `…_self_attn_…` layers (also `…time_emb_proj` for LoRA);
- from a layer it reads the input width: `lora_down.weight`'s and LoHa's `hada_w1_b`/`hada_w2_b`'s second
  dimension, and for LoKr `lokr_w1`'s times `lokr_w2`'s, only when the layer stores both factors whole (its
  fallbacks to `lokr_w1_b`/`lokr_w2_b` look up a misspelt key and never match);
- keys are read in file order; the first that gives a length decides (SDXL: te1's plus te2's, both read);
- 768 is SD 1.x, 1024 SD 2.x, 1280 or 2048 SDXL; without a length an SDXL file is still told by its UNet's
  deep transformer stacks (`transformer_blocks_2` and beyond); anything else is refused.
"""

from __future__ import annotations

import re

BASE_OF_LENGTH = {768: "sd-1", 1024: "sd-2", 1280: "sdxl", 2048: "sdxl"}
# InvokeAI's own name for its SDXL base (its vocabulary, not a family id): the one it also files by deep blocks
INVOKEAI_SDXL = "sdxl"
_DEEP_SDXL_BLOCK = re.compile(r"^lora_unet_(?:(?:down|up)_blocks_\d+_attentions_\d+|mid_block_attentions_\d+"
                              r"|(?:input|output)_blocks_\d+_\d+|middle_block_\d+)_transformer_blocks_(\d+)_")


def probed(module: str) -> bool:
    """Whether InvokeAI's probe reads this kohya module (LoKr must store its W2 whole there)."""
    if module.startswith("lora_unet_"):
        return module.endswith(("_attn2_to_k", "_attn2_to_v"))
    return module.startswith("lora_te") and "_self_attn_" in module


def token_vector_length(shapes: dict[str, tuple]) -> int | None:
    """The length InvokeAI's probe reads from {key: shape}, the keys in the order it reads them."""
    length, te1, te2 = None, None, None
    for key in shapes:
        module = key.split(".", 1)[0]
        time_emb = module.startswith("lora_unet_") and key.endswith("time_emb_proj.lora_down.weight")
        if not (probed(module) or time_emb):
            continue
        found = _width(key, shapes)
        # a key that gives nothing still overwrites the value so far: only the last key read counts
        if module.startswith("lora_te1_"):
            te1 = found
        elif module.startswith("lora_te2_"):
            te2 = found
        elif module.startswith(("lora_te_", "lora_unet_")):
            length = found
        if te1 is not None and te2 is not None:
            length = te1 + te2
        if length is not None:
            return length
    return None


def _width(key: str, shapes: dict[str, tuple]) -> int | None:
    module, part = key.split(".", 1)
    if part in ("lora_down.weight", "hada_w1_b", "hada_w2_b"):
        return shapes[key][1]
    if part.startswith("lokr_"):
        w1, w2 = shapes.get(f"{module}.lokr_w1"), shapes.get(f"{module}.lokr_w2")
        return w1[1] * w2[1] if w1 and w2 else None
    return None


def probe_problem(shapes: dict[str, tuple], base: str, context_dim: int) -> str:
    """Why InvokeAI would refuse this file, or "" when it files it under `base` (its name for the family).

    `context_dim` is the architecture's cross-attention width, the length a right probe reads: 768/1024/2048
    for the real models, which InvokeAI maps to their base; a tiny test model's own width stands in for it.
    Both orders safetensors' load_file has given keys in are tried (by offset in the file, by name)."""
    for keys in (list(shapes), sorted(shapes)):
        length = token_vector_length({k: shapes[k] for k in keys})
        if length == context_dim and BASE_OF_LENGTH.get(length, base) == base:
            continue
        if length is None and base == INVOKEAI_SDXL and any((m := _DEEP_SDXL_BLOCK.match(k)) and int(m[1]) >= 2
                                                     for k in keys):
            continue
        if length is None:
            return ("its probe reads no token-vector length: no cross-attention key/value or text-encoder "
                    "self-attention layer it can read (LoKr: both factors whole)")
        return f"its probe reads a token-vector length of {length}, not this model's {context_dim}"
    return ""
