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
