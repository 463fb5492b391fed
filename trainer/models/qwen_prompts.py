"""How Z-Image and FLUX.2 klein turn a caption into Qwen3 text features, as plain strings and numbers.

Torch-free on purpose: the GUI's caption editor and `plan` may count template tokens without importing
the engine. Both families feed the caption to Qwen3 as a one-turn chat, but differently:

Z-Image (Base and Turbo)
  text  = "<|im_start|>user\\n{caption}<|im_end|>\\n<|im_start|>assistant\\n"
  Qwen3's chat template with `add_generation_prompt=True, enable_thinking=True` (which adds no think block).
  Tokenised padded to 512 with truncation, attention mask passed to Qwen3; the feature is
  `hidden_states[-2]` (the output of decoder layer 35 of 36, before the final RMSNorm); padding rows are
  then dropped, so each caption keeps its own length (at most 512).
  Sources: diffusers 0.42.1 ZImagePipeline._encode_prompt; Tongyi-MAI/Z-Image src/zimage/pipeline.py
  (`enable_thinking=True`, `hidden_states[-2]`, `prompt_embeds[i][prompt_masks[i]]`); ComfyUI
  comfy/text_encoders/z_image.py (the same template as a string).

FLUX.2 klein (4B with Qwen3-4B, 9B with Qwen3-8B)
  text  = "<|im_start|>user\\n{caption}<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n"
  The chat template with `enable_thinking=False` (an empty think block). Padded to 512 ("max_length",
  right, pad `<|endoftext|>` 151643) with truncation; the attention mask goes to Qwen3 but the padded rows
  stay in the features. The feature is `hidden_states[9]`, `[18]`, `[27]` stacked per token:
  (B, 512, 3 x hidden) = 7680 for Qwen3-4B, 12288 for Qwen3-8B (`joint_attention_dim`).
  Sources: diffusers 0.42.1 Flux2KleinPipeline._get_qwen3_prompt_embeds (`hidden_states_layers=(9, 18,
  27)`, stack then permute to (B, L, 3, D)); ComfyUI comfy/text_encoders/flux.py KleinTokenizer (template,
  min_length 512, pad 151643).

A trap for "load only the layers you read": transformers puts the model's final RMSNorm into the LAST
entry of `hidden_states` only. hidden_states[k] for k < num_layers is the raw residual stream. A Qwen3
truncated to 35 (Z-Image) or 27 (klein) layers would return a normed last entry, not the feature above:
truncate AND replace `model.norm` with an identity (or read the layer's output with a hook).
`layers_to_load` says how many decoder layers a recipe needs.

Truncation: diffusers truncates the whole templated text at 512 tokens, so a very long caption also
loses the template's closing tokens. `caption_token_budget` is what is left for the caption itself.
"""

from __future__ import annotations

from dataclasses import dataclass

QWEN3_PAD_ID = 151643      # <|endoftext|>, the tokenizer's pad token
QWEN3_IM_START_ID = 151644
QWEN3_IM_END_ID = 151645
QWEN3_NUM_LAYERS = 36      # Qwen3-4B and Qwen3-8B both have 36 decoder layers


@dataclass(frozen=True)
class QwenPromptRecipe:
    """What a family feeds Qwen3 and what it reads back. `hidden_states` indexes transformers'
    `output_hidden_states` tuple (0 = embeddings, k = output of decoder layer k, -1 = final normed)."""
    prefix: str
    suffix: str
    max_tokens: int
    hidden_states: tuple[int, ...]
    drop_padding: bool         # True: keep only the caption's own rows (Z-Image); False: keep all 512
    template_tokens: int       # tokens the template adds around the caption (checked in the tests)

    def text(self, caption: str) -> str:
        # concatenation, not str.format: a caption may contain braces
        return self.prefix + caption + self.suffix


ZIMAGE = QwenPromptRecipe(
    prefix="<|im_start|>user\n", suffix="<|im_end|>\n<|im_start|>assistant\n",
    max_tokens=512, hidden_states=(-2,), drop_padding=True, template_tokens=8)

KLEIN = QwenPromptRecipe(
    prefix="<|im_start|>user\n", suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    max_tokens=512, hidden_states=(9, 18, 27), drop_padding=False, template_tokens=12)


def layers_to_load(recipe: QwenPromptRecipe, num_layers: int = QWEN3_NUM_LAYERS) -> int:
    """Decoder layers a recipe reads: 35 of 36 for Z-Image (hidden_states[-2] = layer 35's output),
    27 of 36 for klein. Layers above it never influence the features, so they need not be loaded."""
    wanted = [k if k >= 0 else num_layers + 1 + k for k in recipe.hidden_states]
    if min(wanted) < 0 or max(wanted) > num_layers:
        raise ValueError(f"hidden states {recipe.hidden_states} do not exist in a {num_layers}-layer Qwen3")
    return max(wanted)


def feature_width(recipe: QwenPromptRecipe, hidden_size: int) -> int:
    """Width of the text features the transformer takes: 2560 (Z-Image), 3 x hidden (klein)."""
    return hidden_size * len(recipe.hidden_states)


def caption_token_budget(recipe: QwenPromptRecipe, max_tokens: int | None = None) -> int:
    """Caption tokens that fit beside the template within `max_tokens` (default the recipe's 512)."""
    return (max_tokens or recipe.max_tokens) - recipe.template_tokens
