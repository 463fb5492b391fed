"""Counting CLIP tokens in the caption editor, as the text encoder will see them.

Built with the `tokenizers` library from the bundled vocabulary and merges (the same files the engine
uses), with CLIP's normalisation and pre-tokenisation, so the count matches the engine's tokenizer. The
GUI does not import transformers or the engine for this.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

TOKENIZER = Path(__file__).resolve().parent.parent / "assets" / "tokenizer"
CLIP_LIMIT = 75
# CLIP's pre-tokenisation pattern (words, numbers one digit at a time, punctuation runs)
PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
           r"[^\s\p{L}\p{N}]+")


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = json.loads((TOKENIZER / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (TOKENIZER / "merges.txt").read_text(encoding="utf-8")
              .splitlines()[1:] if line.strip()]
    tok = Tokenizer(models.BPE(vocab, merges, end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def count_tokens(text: str) -> int:
    return len(_tokenizer().encode(text, add_special_tokens=False).ids)


CHUNK = CLIP_LIMIT  # the engine encodes a long caption in 75-token chunks (A1111 / kohya max_token_length)


def max_tokens() -> int:
    """The engine's limit (`dataset.max_token_length`, default 225 = 3 chunks); 225 before that key existed."""
    from trainer import config as config_mod

    return getattr(config_mod.DatasetConfig(), "max_token_length", 3 * CHUNK)


def token_summary(n: int, limit: int | None = None) -> tuple[str, bool]:
    """'80 tokens · 2 chunks', and whether the caption is longer than the engine reads (the rest is cut)."""
    limit = limit or max_tokens()
    chunks = max(1, -(-min(n, limit) // CHUNK))
    text = f"{n} tokens · {chunks} chunk{'s' if chunks > 1 else ''}"
    if n > limit:
        return f"{text} — past {limit} tokens the rest is cut in training", True
    return text, False
