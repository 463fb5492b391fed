"""Captions -> conditioning through Qwen3, the text strategy Z-Image and FLUX.2 klein share; the recipe
(trainer/models/qwen_prompts.py) says what each feeds Qwen3 and which hidden states it reads.

The encoder is loaded with only the decoder layers the recipe reads and its final norm replaced by an
identity (qwen_text_encoder below), and the module remembers which entries of `hidden_states` hold the
features (`read_layers`, absolute indices of the full model: a cut model's last entry is then the raw layer
output the full model gives there). Every caption and preview prompt is encoded once into `model.encoded`
before the transformer loads; the encoder is then released (runtime._encode_first).

Z-Image keeps each caption's own rows (padding dropped): `encode` returns the rows padded with zeros to the
longest caption of the batch and, in the `pooled` slot, each caption's length, from which the family hands
the transformer its list of unpadded features. klein keeps all `max_tokens` rows (lengths are all equal).
"""

from __future__ import annotations

import torch

from trainer.models.qwen_prompts import QwenPromptRecipe, layers_to_load


def qwen_text_encoder(config: dict, recipe: QwenPromptRecipe):
    """A Qwen3Model with only the layers `recipe` reads and no final norm (see trainer/models/qwen_prompts.py:
    transformers puts the norm into the last hidden state only)."""
    from transformers import Qwen3Config, Qwen3Model

    full = config["num_hidden_layers"]
    keep = layers_to_load(recipe, full)
    model = Qwen3Model(Qwen3Config.from_dict({**config, "num_hidden_layers": keep, "architectures": ["Qwen3Model"]}))
    model.norm = torch.nn.Identity()
    model.read_layers = tuple(k if k >= 0 else full + 1 + k for k in recipe.hidden_states)
    return model


class QwenText:
    def __init__(self, recipe: QwenPromptRecipe):
        self.recipe = recipe

    def check_tokenizers(self, tokenizers: list, source: str) -> None:
        from trainer.models.assets import QWEN3_TOKENIZER_SIZE
        from trainer.shared.errors import ModelFileError

        if len(tokenizers[0]) != QWEN3_TOKENIZER_SIZE:
            raise ModelFileError(f"the Qwen3 tokenizer of {source} has {len(tokenizers[0])} tokens, expected "
                                 f"{QWEN3_TOKENIZER_SIZE}", "its tokenizer files are damaged: reinstall LoRA Studio")

    def features(self, encoder, tokenizer, captions: list[str], device, max_tokens: int):
        """(features (B, L, width), lengths (B,)): L is `max_tokens`, or the longest caption's rows when the
        recipe drops padding (rows past a caption's length are zeros then)."""
        batch = tokenizer([self.recipe.text(c) for c in captions], padding="max_length", max_length=max_tokens,
                          truncation=True, return_tensors="pt")
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        states = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        hidden = torch.cat([states[k] for k in encoder.read_layers], dim=-1)
        if not self.recipe.drop_padding:
            return hidden, torch.full((len(captions),), max_tokens, dtype=torch.long)
        lengths = mask.sum(dim=1).cpu()
        hidden = hidden[:, :int(lengths.max())] * mask[:, :int(lengths.max()), None].to(hidden.dtype)
        return hidden, lengths

    def encode(self, model, captions: list[str], device, encoders: list | None = None, clip_skip: int = 1,
               max_tokens: int = 512):
        """(features (B, L, width), lengths (B,)), from model.encoded when every caption is there."""
        cached = [model.encoded.get((c, max_tokens)) for c in captions]
        if all(c is not None for c in cached):
            hidden = self.pad([h for h, _ in cached], None)
            return hidden.to(device), torch.stack([n for _, n in cached])
        encoder = (encoders or model.text_encoders)[0]
        return self.features(encoder, model.tokenizers[0], captions, device, max_tokens)

    def pad(self, hiddens: list[torch.Tensor], empty) -> torch.Tensor:
        """Stack per-caption features, zero rows after the shorter ones (their lengths say where they end)."""
        longest = max(h.shape[0] for h in hiddens)
        return torch.stack([torch.nn.functional.pad(h, (0, 0, 0, longest - h.shape[0])) for h in hiddens])

    @torch.no_grad()
    def encode_ahead(self, model, texts: list[str], device, max_tokens: int, batch: int = 8) -> None:
        """Encode TEXTS once into model.encoded, each kept at its own length, BATCH at a time."""
        todo = sorted({t for t in texts if (t, max_tokens) not in model.encoded})
        for start in range(0, len(todo), batch):
            group = todo[start:start + batch]
            hidden, lengths = self.encode(model, group, device, max_tokens=max_tokens)
            for i, text in enumerate(group):
                model.encoded[(text, max_tokens)] = (hidden[i, :int(lengths[i])].cpu(), lengths[i].clone())


def unpadded(hidden: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """Each caption's own rows, as Z-Image's transformer and pipeline take them."""
    return [hidden[i, :int(n)] for i, n in enumerate(lengths)]


class QwenTokenizers:
    """The tokenizer half of a family whose text encoder is Qwen3 (Z-Image, FLUX.2 klein): mixed into the
    family class before Family, so both read the one bundled tokenizer the same way."""

    def tokenizers(self) -> dict:
        from trainer.models.assets import load_qwen3_tokenizer

        return {"tokenizer": load_qwen3_tokenizer()}

    def caption_tokenizer(self):
        from trainer.models.assets import load_qwen3_tokenizer

        return load_qwen3_tokenizer()
