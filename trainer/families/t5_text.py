"""Captions -> conditioning for FLUX.1: T5-XXL's hidden states (every token, padded to the caption limit) and
CLIP-L's pooled output, the text strategy of the FLUX family.

T5 is the largest part of FLUX after the transformer (4.8 GB in fp8, 9.5 GB in bf16), so it never shares
memory with it: every caption (and preview prompt) is encoded once before the transformer loads and kept in
`model.encoded`; the encoders then leave memory unless CLIP-L is trained, in which case its pooled output is
computed live and T5's comes from `model.encoded`. Training, the text cache, validation and previews all ask
here, so they always agree.
"""

from __future__ import annotations

import torch

CLIP_LENGTH = 77


class T5ClipText:
    def check_tokenizers(self, tokenizers: list, source: str) -> None:
        from trainer.models.assets import CLIP_VOCAB_SIZE, T5_TOKENIZER_SIZE
        from trainer.shared.errors import ModelFileError

        for tokenizer, size in zip(tokenizers, (CLIP_VOCAB_SIZE, T5_TOKENIZER_SIZE)):
            if len(tokenizer) != size:
                raise ModelFileError(f"a tokenizer of {source} has {len(tokenizer)} tokens, expected {size}",
                                     "its tokenizer files are damaged: reinstall LoRA Studio")

    def encode(self, model, captions: list[str], device, encoders: list | None = None, clip_skip: int = 1,
               max_tokens: int = 512):
        """(T5 hidden states (B, max_tokens, 4096), CLIP-L pooled (B, 768))."""
        encoders = encoders or model.text_encoders
        cached = [model.encoded.get((c, max_tokens)) for c in captions]
        if all(cached):
            t5 = torch.stack([h for h, _ in cached]).to(device)
            live_clip = encoders[0] is not None and _trained(encoders[0])
            pooled = self._pooled(model, encoders[0], captions, device) if live_clip else \
                torch.stack([p for _, p in cached]).to(device)
            return t5, pooled
        return self._t5(model, encoders[1], captions, device, max_tokens), \
            self._pooled(model, encoders[0], captions, device)

    def _pooled(self, model, clip, captions: list[str], device) -> torch.Tensor:
        ids = model.tokenizers[0](captions, padding="max_length", max_length=CLIP_LENGTH, truncation=True,
                                  return_tensors="pt").input_ids.to(device)
        return clip(ids).pooler_output

    def _t5(self, model, t5, captions: list[str], device, max_tokens: int) -> torch.Tensor:
        ids = model.tokenizers[1](captions, padding="max_length", max_length=max_tokens, truncation=True,
                                  return_tensors="pt").input_ids.to(device)
        return t5(ids)[0]

    def pad(self, hiddens: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
        """Every caption is padded to the same limit already."""
        return torch.stack(hiddens)

    @torch.no_grad()
    def encode_ahead(self, model, texts: list[str], device, max_tokens: int, batch: int = 8) -> None:
        """Encode TEXTS once into model.encoded (what T5 reads before it leaves memory), BATCH at a time: an
        fp8 T5 upcasts each layer's weights once per pass, whatever the batch."""
        todo = sorted({t for t in texts if (t, max_tokens) not in model.encoded})
        for start in range(0, len(todo), batch):
            group = todo[start:start + batch]
            t5, pooled = self.encode(model, group, device, max_tokens=max_tokens)
            for i, text in enumerate(group):
                model.encoded[(text, max_tokens)] = (t5[i].cpu(), pooled[i].cpu())


def _trained(module) -> bool:
    return any(p.requires_grad for p in module.parameters())
