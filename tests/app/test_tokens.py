"""The GUI's token counter agrees with the engine's tokenizers (CLIP; T5 and Qwen3 for the DiT families)."""

import pytest

from app.tokens import count_tokens
from trainer.models.assets import load_tokenizer

CAPTIONS = ["a photo of a cat", "zkx, 1girl, red hair, looking at viewer, masterpiece!!",
            "Café au lait, 1990s film photo — high contrast; f/1.8 bokeh", "", "don't stop me now 12345"]


@pytest.mark.parametrize("caption", CAPTIONS)
def test_counts_match_the_engine(caption):
    engine = load_tokenizer()
    assert count_tokens(caption) == len(engine(caption, add_special_tokens=False).input_ids)


@pytest.mark.parametrize("family", ["flux1", "zimage", "flux2-klein"])
def test_the_dit_families_tokenizers_count_as_the_engine_reads(family):
    """The caption editor counts with the family's own tokenizer (its `tokenizer` fact): T5 for FLUX.1, the
    gzipped Qwen3 one for Z-Image and klein."""
    from trainer.families.registry import get

    fam = get(family)
    engine = fam.tokenizers()
    engine = engine.get("tokenizer_2", engine.get("tokenizer"))  # the main text encoder's: T5 / Qwen3
    for caption in CAPTIONS:
        assert count_tokens(caption, fam.facts()["tokenizer"]) == \
            len(engine(caption, add_special_tokens=False).input_ids)
