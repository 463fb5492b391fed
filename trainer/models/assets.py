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


TOKENIZER_T5 = ASSETS / "tokenizer_t5"        # T5 v1.1: FLUX.1's second text encoder (invokeai wheel)
TOKENIZER_QWEN3 = ASSETS / "tokenizer_qwen3"  # Qwen3 (Z-Image, FLUX.2 klein); tokenizer.json is gzipped
T5_TOKENIZER_SIZE = 32100      # 32000 pieces + 100 sentinels; the encoders' table has 32128 rows
QWEN3_TOKENIZER_SIZE = 151669  # 151643 BPE tokens + 26 added


def load_t5_tokenizer():
    """The bundled T5 v1.1 fast tokenizer, refused if it does not count 32100 tokens (see load_tokenizer)."""
    from transformers import T5TokenizerFast

    tokenizer = T5TokenizerFast.from_pretrained(str(TOKENIZER_T5), local_files_only=True)
    return _counted(tokenizer, T5_TOKENIZER_SIZE, TOKENIZER_T5)


def load_qwen3_tokenizer():
    """The bundled Qwen3 tokenizer. Its tokenizer.json is shipped gzipped (11 MB -> 2 MB, as in the invokeai
    wheel) and transformers reads only plain files, so it is expanded into a temporary folder to load."""
    import gzip
    import shutil
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        with gzip.open(TOKENIZER_QWEN3 / "tokenizer.json.gz", "rb") as src:
            Path(tmp, "tokenizer.json").write_bytes(src.read())
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            shutil.copyfile(TOKENIZER_QWEN3 / name, Path(tmp, name))
        tokenizer = AutoTokenizer.from_pretrained(tmp, local_files_only=True)  # reads everything in now
    return _counted(tokenizer, QWEN3_TOKENIZER_SIZE, TOKENIZER_QWEN3)


def _counted(tokenizer, expected: int, folder: Path):
    if len(tokenizer) != expected:
        raise ModelFileError(f"tokenizer in {folder} has {len(tokenizer)} tokens, expected {expected}",
                             "the tokenizer files are damaged: reinstall LoRA Studio")
    return tokenizer
