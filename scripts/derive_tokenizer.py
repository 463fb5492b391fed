"""Derive the CLIP BPE tokenizer files in assets/ from open_clip's `bpe_simple_vocab_16e6.txt.gz`.

Where the source came from: the `open_clip_torch` wheel on PyPI (MIT licence), file
`open_clip/bpe_simple_vocab_16e6.txt.gz`; the version and SHA-256 used are recorded in assets/PROVENANCE.md.

How: the .gz holds BPE merges, one pair per line after a header line. CLIP uses the first 49152-256-2 merges.
The vocabulary is the 256 byte-level symbols (GPT-2's bytes->unicode table), the same 256 with an end-of-word
marker `</w>`, one token per merge (the pair joined), then `<|startoftext|>` and `<|endoftext|>`: 49408 tokens.
SDXL's second tokenizer (OpenCLIP ViT-bigG) is the same BPE with `!` as its padding token.

Usage: python scripts/derive_tokenizer.py PATH/TO/bpe_simple_vocab_16e6.txt.gz
"""

import gzip
import hashlib
import json
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
N_MERGES = 49152 - 256 - 2


def bytes_to_unicode() -> list[str]:
    """GPT-2's reversible map of the 256 byte values onto printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    order = printable + [b for b in range(256) if b not in printable]
    return [chars[b] for b in order]


def derive(gz_path: Path) -> tuple[dict, list[str]]:
    lines = gzip.open(gz_path).read().decode("utf-8").split("\n")
    merges = lines[1:N_MERGES + 1]
    symbols = bytes_to_unicode()
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def write_folder(folder: Path, vocab: dict, merges: list[str], pad: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": pad}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
              "errors": "replace", "add_prefix_space": False, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def main() -> None:
    gz = Path(sys.argv[1])
    vocab, merges = derive(gz)
    assert len(vocab) == 49408, len(vocab)
    write_folder(ASSETS / "tokenizer", vocab, merges, pad="<|endoftext|>")
    write_folder(ASSETS / "tokenizer_2", vocab, merges, pad="!")
    print(f"sha256 {hashlib.sha256(gz.read_bytes()).hexdigest()}  {gz.name}; {len(vocab)} tokens")


if __name__ == "__main__":
    main()
