"""Captions -> conditioning with CLIP text encoders (SD1.x, SD2.x, SDXL): the text strategy those families
share. Long captions are encoded in 75-token chunks, as A1111 and ComfyUI build long prompts.

A text strategy answers `encode(model, captions, device, encoders, clip_skip, max_tokens)` with
(hidden states, pooled or None), and `pad(hiddens, empty)` stacks per-caption results of different lengths.
Training, the text cache and previews all encode through it, so they always agree.
"""

from __future__ import annotations

import math

import torch

CHUNK = 75  # caption tokens per pass: CLIP has 77 positions, two of them for BOS and EOS


def chunk_count(tokenizers, captions: list[str], max_tokens: int) -> int:
    """How many 75-token chunks the longest caption needs (at least one, at most max_tokens / 75)."""
    longest = max((len(ids) for tok in tokenizers
                   for ids in tok(captions, add_special_tokens=False, truncation=True,
                                  max_length=max_tokens).input_ids), default=0)
    return max(1, math.ceil(longest / CHUNK))


def tokenize(tokenizer, captions: list[str], chunks: int = 1) -> torch.Tensor:
    """(batch, chunks, 77) token ids: each chunk is BOS + the next 75 caption tokens + EOS + padding.

    With one chunk this is exactly the tokenizer's own truncated, padded output; a chunk beyond the end of
    a caption is BOS EOS PAD…, which is what the empty caption gives (so padding by it changes nothing).
    """
    body = tokenizer(captions, add_special_tokens=False, truncation=True, max_length=chunks * CHUNK).input_ids
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows = []
    for ids in body:
        for k in range(chunks):
            chunk = [bos, *ids[k * CHUNK:(k + 1) * CHUNK], eos]
            rows.append(chunk + [pad] * (CHUNK + 2 - len(chunk)))
    return torch.tensor(rows).view(len(captions), chunks, CHUNK + 2)


class ClipText:
    """`penultimate`: condition on the layer before the last (SDXL's rule; clip_skip moves back from there)
    instead of the final layer-normed output (SD1/SD2). `pooled`: the last encoder's projected pooled output
    is part of the conditioning (SDXL's text_embeds)."""

    def __init__(self, penultimate: bool = False, pooled: bool = False):
        self.penultimate, self.pooled = penultimate, pooled

    def check_tokenizers(self, tokenizers: list, source: str) -> None:
        from trainer.models.assets import CLIP_VOCAB_SIZE
        from trainer.shared.errors import ModelFileError

        for tokenizer in tokenizers:
            if len(tokenizer) != CLIP_VOCAB_SIZE:
                raise ModelFileError(f"the tokenizer of {source} has {len(tokenizer)} tokens, expected "
                                     f"{CLIP_VOCAB_SIZE}", "its tokenizer files are damaged: copy the model folder again")

    def encode(self, model, captions: list[str], device, encoders: list | None = None, clip_skip: int = 1,
               max_tokens: int = CHUNK):
        """Return (encoder_hidden_states, pooled or None).

        `encoders` replaces model.text_encoders when they are trained on several GPUs (DDP-wrapped).
        `clip_skip` is A1111's: SD1/SD2 take layer -clip_skip through the final layer norm (as kohya, A1111
        and diffusers do); SDXL already conditions on the penultimate layer and moves back from there.
        `max_tokens` (75/150/225, kohya's max_token_length): longer captions are encoded in 75-token chunks,
        each through the encoder on its own, and the chunks' 77 hidden states are concatenated, as A1111 and
        ComfyUI build long prompts at inference (kohya drops the inner BOS/EOS states; we match what the UIs
        feed the LoRA). Only as many chunks as the longest caption needs, so captions of 75 tokens or fewer
        encode as before. The pooled output is the first chunk's, as kohya and A1111 take it.
        """
        encoders = encoders or model.text_encoders
        chunks = chunk_count(model.tokenizers, captions, max_tokens) if max_tokens > CHUNK else 1
        hidden, pooled = [], None
        for tokenizer, encoder in zip(model.tokenizers, encoders):
            ids = tokenize(tokenizer, captions, chunks).to(device)
            states, pooled = self._encode_chunks(encoder, ids.flatten(0, 1), clip_skip)  # the last encoder's counts
            hidden.append(states.reshape(len(captions), -1, states.shape[-1]))  # chunks side by side
        if pooled is not None:
            pooled = pooled.view(len(captions), chunks, -1)[:, 0]  # each caption's first chunk
        return torch.cat(hidden, dim=-1), pooled

    def _encode_chunks(self, encoder, ids: torch.Tensor, clip_skip: int):
        """Hidden states of each 77-token row, and the projection encoder's pooled text_embeds if used."""
        if not self.penultimate:
            if clip_skip == 1:
                return encoder(ids)[0], None
            chosen = encoder(ids, output_hidden_states=True).hidden_states[-clip_skip]
            return _final_layer_norm(encoder)(chosen), None
        out = encoder(ids, output_hidden_states=True)
        # the penultimate layer; out[0] is text_embeds of the projection encoder (the last one)
        return out.hidden_states[-1 - clip_skip], (out[0] if self.pooled else None)

    def pad(self, hiddens: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
        """Stack per-caption hidden states of different chunk counts, padding each with the empty caption's
        encoding (one chunk): the same as encoding them together, where a missing chunk is BOS EOS PAD…."""
        longest = max(h.shape[-2] for h in hiddens)
        padded = [torch.cat([h, *[empty] * ((longest - h.shape[-2]) // empty.shape[-2])], dim=-2) for h in hiddens]
        return torch.stack(padded)


def _final_layer_norm(encoder) -> torch.nn.Module:
    inner = getattr(encoder, "module", encoder)  # DDP-wrapped when trained on several GPUs
    # transformers 5 flattened CLIPTextModel; older releases keep it under .text_model
    return getattr(inner, "final_layer_norm", None) or inner.text_model.final_layer_norm
