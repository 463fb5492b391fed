"""Where the offline assets live: model config folders (JSON only) and the CLIP tokenizer files."""

from __future__ import annotations

from pathlib import Path

from trainer.shared.errors import ModelFileError

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CONFIGS = ASSETS / "configs"
TOKENIZER = ASSETS / "tokenizer"      # CLIP ViT-L/14 BPE, pad <|endoftext|>
TOKENIZER_2 = ASSETS / "tokenizer_2"  # same BPE, pad "!" (OpenCLIP ViT-bigG, SDXL's second encoder)
CLIP_VOCAB_SIZE = 49408


def config_folder(name: str) -> Path:
    """assets/configs/NAME: one of sd15, sd2, sd2-768v, sdxl, tiny-sd15, tiny-sd2, tiny-sdxl."""
    folder = CONFIGS / name
    if not (folder / "model_index.json").exists():
        raise ModelFileError(f"model config folder {folder} is missing",
                             "the installation is incomplete: reinstall LoRA Studio")
    return folder


def load_tokenizer(second: bool = False):
    """Load a bundled CLIP tokenizer and refuse a broken one.

    transformers 5 silently builds a 2-token tokenizer from wrong arguments; training with it would map every
    caption to the same ids and the LoRA would learn nothing. So count the tokens.
    """
    from transformers import CLIPTokenizer

    folder = TOKENIZER_2 if second else TOKENIZER
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    if len(tokenizer) != CLIP_VOCAB_SIZE:
        raise ModelFileError(f"tokenizer in {folder} has {len(tokenizer)} tokens, expected {CLIP_VOCAB_SIZE}",
                             "the tokenizer files are damaged: reinstall LoRA Studio")
    return tokenizer
