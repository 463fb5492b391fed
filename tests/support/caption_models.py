"""Tiny captioning models built at test time (nothing is downloaded): a WD14-style ONNX tagger whose scores
are set per tag, and a random tiny BLIP image-to-text model with its processor."""

from __future__ import annotations

import csv
import math
from pathlib import Path

TAGGER_SIDE = 32


def build_tagger(folder: Path, tags: list[tuple[str, int, float]], side: int = TAGGER_SIDE,
                 outputs: int | None = None) -> Path:
    """model.onnx + selected_tags.csv; tag i always scores tags[i][2] (weights 0, bias = logit(score)).

    The graph has the real tagger's interface: NHWC float32 input of `side`, sigmoid scores out.
    `outputs` builds a model whose score count differs from the CSV (a mismatched pair).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    n = outputs or len(tags)
    scores = [tags[i][2] if i < len(tags) else 0.01 for i in range(n)]
    bias = np.array([math.log(s / (1 - s)) for s in scores], dtype=np.float32)
    weight = np.zeros((3, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input", "axes"], ["pooled"], keepdims=0),
         helper.make_node("MatMul", ["pooled", "weight"], ["logits0"]),
         helper.make_node("Add", ["logits0", "bias"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["output"])],
        "tiny-tagger",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, side, side, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
         numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    with (folder / "selected_tags.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category, _score) in enumerate(tags):
            writer.writerow([i, name, category, 100])
    return folder


CAPTION_WORD = "cat"
BLIP_TOKENS = 5
WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "circle", "square", "on", "the", "table", "sky"]


def build_blip(folder: Path) -> Path:
    """A random BLIP captioner with a 32-px vision tower and a word-level BERT vocabulary of WORDS.

    A bias on CAPTION_WORD makes greedy decoding say it BLIP_TOKENS times ("cat cat cat cat cat"), so the
    caption is known in advance although the weights are random.
    """
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    # transformers 5: `vocab_file=` builds a useless 5-token tokenizer (as with CLIP); pass the vocab itself
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(special + WORDS)}, do_lower_case=True,
                              bos_token="[DEC]")
    assert len(tokenizer) == len(special) + len(WORDS), len(tokenizer)
    size = len(special) + len(WORDS)
    config = BlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        text_config={"vocab_size": size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "encoder_hidden_size": 32, "max_position_embeddings": 64,
                     "bos_token_id": 5, "pad_token_id": 0, "sep_token_id": 3, "eos_token_id": 3},
        projection_dim=32)
    model = BlipForConditionalGeneration(config)
    import torch

    with torch.no_grad():  # random weights say nothing; a bias makes the greedy caption a known word
        model.text_decoder.cls.predictions.bias.zero_()
        model.text_decoder.cls.predictions.bias[len(special) + WORDS.index(CAPTION_WORD)] = 50.0
    model.config.decoder_start_token_id = 5
    model.generation_config.decoder_start_token_id = 5
    model.generation_config.bos_token_id = 5
    model.generation_config.eos_token_id = 3
    model.generation_config.pad_token_id = 0
    model.generation_config.max_new_tokens = BLIP_TOKENS  # the folder's own setting wins: keeps tests fast
    model.save_pretrained(folder)
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    processor.save_pretrained(folder)
    return folder


# Vision-language models: random tiny ones of the real classes, with a byte-level BPE tokenizer built here
# (the Qwen/Llama-3/BART kind). The language head is zeroed, so every logit ties and greedy decoding picks
# token 0, which is " cat": the caption is "cat cat cat ..." whatever the weights and the prompt.
VLM_TOKENS = 4  # the caption length tests ask for (max_new_tokens): small keeps them fast
QWEN_TEMPLATE = (  # the shape of Qwen2-VL's chat template, trimmed to what captioning sends
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}")
LLAVA_TEMPLATE = (  # LLaVA-1.5's USER/ASSISTANT form
    "{% for message in messages %}{{ message['role'].upper() }}: {% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def byte_bpe(tokenizer_class, special: list[str], **kwargs):
    """A byte-level BPE tokenizer: " cat" (id 0) and a few words as merged tokens, every byte, `special`."""
    from tokenizers.pre_tokenizers import ByteLevel

    words = ["Ġcat"] + ["Ġ" + w for w in WORDS if w != CAPTION_WORD]
    vocab, merges = {}, []
    for word in words:
        for end in range(2, len(word) + 1):
            if word[:end - 1] not in vocab and end - 1 > 1:
                vocab[word[:end - 1]] = None
            merges.append((word[:end - 1], word[end - 1]))
        vocab[word] = None
    vocab = {"Ġcat": 0, **{t: 0 for t in vocab if t != "Ġcat"}}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab.setdefault(symbol, 0)
    vocab = {token: i for i, token in enumerate(vocab)}
    tokenizer = tokenizer_class(vocab=vocab, merges=list(dict.fromkeys(merges)), **kwargs)
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in special if t not in tokenizer.get_vocab()]})
    return tokenizer


def _generation(model, eos: int, pad: int, bos: int | None = None, zero_head: bool = True) -> None:
    import torch

    if zero_head:
        with torch.no_grad():
            model.get_output_embeddings().weight.zero_()
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    if bos is not None:
        model.generation_config.bos_token_id = bos


def build_qwen_vl(folder: Path, version: str = "2.5", zero_head: bool = True) -> Path:
    """A tiny Qwen2-VL (version "2") or Qwen2.5-VL ("2.5") folder as transformers saves one; `zero_head`
    False keeps the random language head, whose captions are random words that depend on the image."""
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]
    tokenizer = byte_bpe(tf.Qwen2Tokenizer, special)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    config_class, model_class = ((tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration) if version == "2" else
                                 (tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration))
    vision = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "intermediate_size": 64, "out_hidden_size": 32,
              "fullatt_block_indexes": [0], "window_size": 56}
    tokens = {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
              "pad_token_id": ids["<|endoftext|>"]}
    config = config_class(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "rope_scaling": {"type": "mrope", "mrope_section": [4, 2, 2]},
                     "max_position_embeddings": 512, "tie_word_embeddings": False, **tokens},
        vision_config=vision, image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False, **tokens)
    model = model_class(config)
    _generation(model, ids["<|im_end|>"], ids["<|endoftext|>"], zero_head=zero_head)
    model.save_pretrained(folder)
    # The processor's parts, saved one by one: Qwen2VLProcessor itself cannot be built without torchvision
    # (its video half needs it), and the engine must cope with that, as it does with a downloaded folder.
    tokenizer.save_pretrained(folder)
    tf.Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28).save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(QWEN_TEMPLATE, encoding="utf-8")
    return folder


def build_llava(folder: Path) -> Path:
    """A tiny LLaVA (CLIP vision tower + a Llama language model), the JoyCaption layout, with a chat template."""
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    special = ["<|endoftext|>", "<image>"]
    tokenizer = byte_bpe(tf.Qwen2Tokenizer, special)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    end = ids["<|endoftext|>"]
    config = tf.LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                       "projection_dim": 32},
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 32,
                     "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "max_position_embeddings": 256, "bos_token_id": end,
                     "eos_token_id": end, "pad_token_id": end, "tie_word_embeddings": False},
        image_token_index=ids["<image>"], vision_feature_layer=-2, vision_feature_select_strategy="default",
        tie_word_embeddings=False)
    model = tf.LlavaForConditionalGeneration(config)
    _generation(model, end, end)
    model.save_pretrained(folder)
    image_processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    tf.LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                      vision_feature_select_strategy="default", num_additional_image_tokens=1,
                      chat_template=LLAVA_TEMPLATE).save_pretrained(folder)
    return folder


def build_florence2(folder: Path) -> Path:
    """A tiny Florence-2 (DaViT vision tower, BART encoder-decoder) as transformers saves one: 32-px images
    give 4x4 patches after two stages, plus one pooled token."""
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    special = ["<s>", "<pad>", "</s>", "<unk>", "<image>"]
    tokenizer = byte_bpe(tf.BartTokenizer, special, extra_special_tokens={"image_token": "<image>"})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    vision = {"depths": [1, 1], "patch_size": [7, 3], "patch_stride": [4, 2], "patch_padding": [3, 1],
              "patch_prenorm": [False, True], "embed_dim": [16, 32], "num_heads": [1, 2], "num_groups": [1, 2],
              "window_size": 2, "projection_dim": 32, "max_position_embeddings": 8}
    text = {"vocab_size": len(tokenizer), "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
            "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64, "max_position_embeddings": 128, "bos_token_id": ids["<s>"],
            "eos_token_id": ids["</s>"], "pad_token_id": ids["<pad>"], "decoder_start_token_id": ids["</s>"],
            "forced_bos_token_id": ids["<s>"], "forced_eos_token_id": None, "tie_word_embeddings": False}
    config = tf.Florence2Config(text_config=text, vision_config=vision, image_token_id=ids["<image>"],
                                tie_word_embeddings=False)
    model = tf.Florence2ForConditionalGeneration(config)
    _generation(model, ids["</s>"], ids["<pad>"], ids["<s>"])
    model.generation_config.decoder_start_token_id = ids["</s>"]
    model.save_pretrained(folder)
    image_processor = tf.CLIPImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False,
                                            image_seq_length=17)
    tf.Florence2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
