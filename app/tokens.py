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
