"""The GUI's token counter agrees with the engine's CLIP tokenizer."""

import pytest

from app.tokens import count_tokens
from trainer.models.assets import load_tokenizer

CAPTIONS = ["a photo of a cat", "zkx, 1girl, red hair, looking at viewer, masterpiece!!",
            "Café au lait, 1990s film photo — high contrast; f/1.8 bokeh", "", "don't stop me now 12345"]


@pytest.mark.parametrize("caption", CAPTIONS)
def test_counts_match_the_engine(caption):
    engine = load_tokenizer()
    assert count_tokens(caption) == len(engine(caption, add_special_tokens=False).input_ids)
