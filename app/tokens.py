"""Counting caption tokens in the caption editor, as the model's main text encoder will see them.

Which tokenizer, how many tokens a model reads and in what chunks are the model family's facts, from the
engine (`inspect --json`: `family.tokenizer`, `max_tokens`, `token_chunk`). The counter is built with the
`tokenizers` library from the bundled files (the same the engine uses): a `tokenizer.json` as it is, or
CLIP's vocabulary and merges with CLIP's normalisation and pre-tokenisation, so the count matches the
engine's tokenizer. The GUI does not import transformers or the engine for this.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# CLIP's pre-tokenisation pattern (words, numbers one digit at a time, punctuation runs)
PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
           r"[^\s\p{L}\p{N}]+")


@functools.lru_cache(maxsize=4)
def _tokenizer(folder_name: str):
    from tokenizers import Tokenizer

    folder = ASSETS / folder_name
    if (folder / "tokenizer.json").exists():
        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    if (folder / "tokenizer.json.gz").exists():  # Qwen3's, shipped gzipped (assets/PROVENANCE.md)
        import gzip

        return Tokenizer.from_str(gzip.decompress((folder / "tokenizer.json.gz").read_bytes()).decode("utf-8"))
    return _clip_bpe(folder)


def _clip_bpe(folder: Path):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (folder / "merges.txt").read_text(encoding="utf-8")
              .splitlines()[1:] if line.strip()]
    tok = Tokenizer(models.BPE(vocab, merges, end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def count_tokens(text: str, tokenizer: str = "tokenizer") -> int:
    """Tokens of TEXT with the bundled tokenizer in assets/TOKENIZER (a family's `tokenizer` fact)."""
    return len(_tokenizer(tokenizer).encode(text, add_special_tokens=False).ids)


def token_summary(n: int, family: dict | None = None, limit: int | None = None) -> tuple[str, bool]:
    """'80 tokens · 2 chunks', and whether the caption is longer than the engine reads (the rest is cut).
    FAMILY: the model family's facts from the engine; without them only the count is known. LIMIT:
    dataset.max_token_length when the config sets one (default: the family's)."""
    text = f"{n} tokens"
    if not family:
        return text, False
    limit, chunk = limit or family["default_tokens"], family["token_chunk"]
    if chunk > 1:
        chunks = max(1, -(-min(n, limit) // chunk))
        text += f" · {chunks} chunk{'s' if chunks > 1 else ''}"
    if n > limit:
        return f"{text} — past {limit} tokens the rest is cut in training", True
    return text, False
