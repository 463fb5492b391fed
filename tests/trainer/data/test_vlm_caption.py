"""Vision-language captioning (Florence-2, Qwen2-VL, Qwen2.5-VL, LLaVA) on tiny random models of the real
transformers classes, built here with their processors and byte-level tokenizers: detection from the
folder, prompts, batches, post-processing, the CLI, and the refusals a user can act on.

The tiny models' language heads are zeroed, so each caption is CAPTION_WORD repeated (see
tests/support/caption_models.py); one Qwen model keeps its random head to compare batches with single
images."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.support.caption_models import (
    CAPTION_WORD,
    VLM_TOKENS,
    build_florence2,
    build_llava,
    build_qwen_vl,
    build_tagger,
)
from trainer.data.captioning import CaptionerError, detect, load_captioner, memory
from trainer.data.captioning.finish import Finish, strip_opening
from trainer.data.captioning.prompts import FLORENCE, LLAVA, OTHER, QWEN
from trainer.data.captioning.run import auto_caption

SENTENCE = " ".join([CAPTION_WORD] * VLM_TOKENS)
BUILDERS = {"florence-2": build_florence2, "qwen2-vl": lambda f: build_qwen_vl(f, "2"),
            "qwen2.5-vl": build_qwen_vl, "llava": build_llava}
SIZES = [(64, 48), (30, 90), (56, 56)]  # Qwen gives these different token counts: a batch is padded
KINDS = {"florence-2": FLORENCE, "qwen2-vl": QWEN, "qwen2.5-vl": QWEN, "llava": LLAVA}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    for i, size in enumerate(SIZES):
        Image.new("RGB", size, (i * 80, 40, 200 - i * 60)).save(folder / f"img{i}.png")
    return folder


def images(folder):
    return sorted(folder.glob("*.png"))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_kind_is_detected_and_captions_a_batch_with_its_prompt(models, dataset, name):
    folder = models[name]
    assert detect(folder) == KINDS[name]
    captioner = load_captioner(folder, "cpu", max_new_tokens=VLM_TOKENS, batch_size=3)
    opened = [Image.open(p) for p in images(dataset)]
    assert captioner.caption_batch(opened) == [SENTENCE] * 3
    if name == "florence-2":  # a task token, not words
        assert captioner.text == "<DETAILED_CAPTION>"
    else:  # the instruction inside the model's own chat turn, the answer left to the model
        assert "Describe this image for a training caption in one paragraph" in captioner.text
        assert captioner.text.rstrip().endswith(("<|im_start|>assistant", "ASSISTANT:"))


def test_other_models_with_a_chat_template_are_vision_language_and_blip_is_not(tmp_path):
    from trainer.data.captioning import IMAGE_TO_TEXT

    folder = tmp_path / "gemma-3"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3"}), encoding="utf-8")
    assert detect(folder) == IMAGE_TO_TEXT
    (folder / "chat_template.jinja").write_text("{{ messages }}", encoding="utf-8")
    assert detect(folder) == OTHER


def test_prompt_follows_the_length_or_the_users_words_and_florence_takes_only_task_tokens(models):
    assert load_captioner(models["florence-2"], "cpu", length="short").text == "<CAPTION>"
    assert load_captioner(models["florence-2"], "cpu", length="long").prompt == "<MORE_DETAILED_CAPTION>"
    short = load_captioner(models["llava"], "cpu", length="short")
    assert "in one sentence" in short.prompt and short.max_new_tokens < 100
    custom = load_captioner(models["qwen2.5-vl"], "cpu", prompt="Name the colours only.", max_new_tokens=7)
    assert "<|image_pad|><|vision_end|>Name the colours only.<|im_end|>" in custom.text
    assert custom.max_new_tokens == 7
    with pytest.raises(CaptionerError, match="Florence-2 takes a task token") as refused:
        load_captioner(models["florence-2"], "cpu", prompt="Describe the image.")
    assert "<MORE_DETAILED_CAPTION>" in refused.value.hint


def test_a_batch_gives_the_same_captions_as_one_image_at_a_time(tmp_path, dataset):
    # Left padding and the attention mask must keep padded rows from changing what the model says (with
    # right padding, the padded rows of this batch come out as other words).
    folder = build_qwen_vl(tmp_path / "random-head", "2", zero_head=False)
    captioner = load_captioner(folder, "cpu", max_new_tokens=6, batch_size=3)
    rng = np.random.default_rng(0)
    opened = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]
    singles = [captioner.caption(image) for image in opened]
    assert captioner.caption_batch(opened) == singles


def test_boilerplate_openings_are_stripped_and_real_content_kept():
    assert strip_opening("The image shows a woman sitting on a bench.") == "A woman sitting on a bench."
    assert strip_opening("This picture depicts: two cats") == "Two cats"
    assert strip_opening("In this image, we can see a red car.") == "A red car."
    assert strip_opening("This is a photograph of an old man") == "An old man"
    assert strip_opening("The image is of a lighthouse at dusk") == "A lighthouse at dusk"
    for kept in ("A photo of a dog on grass.", "The woman shows her ticket.", "1girl, solo"):
        assert strip_opening(kept) == kept


def test_clip_budget_is_warned_about_or_trimmed_to_whole_sentences():
    first = "A knight in silver armour stands in a misty forest at dawn, holding a long sword."
    more = "Soft golden light falls through tall pine trees onto the wet moss."
    long = " ".join([first] + [more] * 6)
    caption, note = Finish().fit(long)
    assert caption == long and "CLIP tokens" in note and "trim" in note
    trimmed, note = Finish(clip_limit="trim").fit(long)
    assert trimmed.startswith(first) and trimmed.endswith(".") and "trimmed from" in note
    assert Finish().tokens(trimmed) <= 75 < Finish().tokens(f"{trimmed} {more}")  # as many sentences as fit
    assert Finish().fit(first) == (first, "")


def test_tags_come_before_the_sentence_and_openings_go(dataset, tmp_path):
    from trainer.data.captioning import Captioner

    class Talker(Captioner):
        batch_size = 2

        def caption_batch(self, opened):
            return ["The image shows a cat on a mat."] * len(opened)

    tagger = load_captioner(build_tagger(tmp_path / "tagger", [("cat", 0, 0.9), ("mat", 0, 0.6)]), "cpu")
    results = list(auto_caption(dataset, images(dataset), Talker(), trigger="zkx", tagger=tagger))
    assert [r.status for r in results] == ["written"] * 3
    assert (dataset / "img2.txt").read_text(encoding="utf-8") == "zkx, cat, mat, A cat on a mat.\n"


def test_preview_captions_without_writing_and_a_failing_batch_costs_one_image(dataset):
    from trainer.data.captioning import Captioner

    class OneBad(Captioner):
        batch_size = 3

        def caption_batch(self, opened):
            raise RuntimeError("CUDA out of memory")  # the batch fails: each image goes again alone

        def caption(self, image):
            if image.size == (30, 90):
                raise RuntimeError("this one is bad")
            return "a sentence"

    (dataset / "img0.txt").write_text("mine", encoding="utf-8")
    preview = list(auto_caption(dataset, images(dataset), OneBad(), mode="fill", trigger="zkx", preview=True))
    assert [(r.status, r.caption) for r in preview] == [("preview", "zkx, a sentence"), ("skipped", "")] + \
        [("preview", "zkx, a sentence")]
    assert not (dataset / "img2.txt").exists() and not (dataset / ".lora-studio").exists()
    results = list(auto_caption(dataset, images(dataset), OneBad(), mode="fill"))
    assert [r.status for r in results] == ["skipped", "skipped", "written"]
    assert results[1].failed and results[1].reason == "cannot caption it: this one is bad"


def test_cli_writes_tags_and_sentence_with_the_prompt_and_token_cap(models, dataset, tmp_path):
    tagger = build_tagger(tmp_path / "tagger", [("blue_sky", 0, 0.9)])
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "dataset", "caption", str(dataset), "--model", str(models["qwen2.5-vl"]),
         "--prompt", "Describe the sky.", "--max-tokens", "2", "--batch-size", "2", "--tags-model", str(tagger),
         "--trigger", "zkx", "--events", "jsonl"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    evts = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["caption"] for e in evts if e["type"] == "caption"] == [f"zkx, blue sky, {CAPTION_WORD} {CAPTION_WORD}"] * 3
    assert (dataset / "img1.txt").read_text(encoding="utf-8").strip() == f"zkx, blue sky, {CAPTION_WORD} {CAPTION_WORD}"
    assert "with qwen-vl on cpu" in result.stderr


def test_cli_preview_prints_the_first_images_caption_and_writes_nothing(models, dataset, capsys, monkeypatch):
    from trainer.commands.dispatch import main
    from trainer.run.control import Control

    monkeypatch.setattr(Control, "install_signal_handlers", lambda self: None)  # in-process: leave pytest's
    code = main(["dataset", "caption", str(dataset), "--model", str(models["florence-2"]), "--preview",
                 "--length", "short", "--max-tokens", "3", "--trigger", "zkx"])
    out, err = capsys.readouterr()
    assert code == 0 and out == f"[1/1] {dataset / 'img0.png'}: zkx, {CAPTION_WORD} {CAPTION_WORD} {CAPTION_WORD}\n"
    assert "previewing 1 images with florence-2" in err and not list(dataset.glob("*.txt"))


def test_refusals_name_the_folder_and_what_to_do(models, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    original = tmp_path / "Florence-2-large"
    original.mkdir()
    (original / "config.json").write_text(json.dumps({"model_type": "florence2", "auto_map": {},
                                                      "vision_config": {"model_type": "davit"}}))
    with pytest.raises(CaptionerError, match="original Florence-2 release") as refused:
        load_captioner(original, "cpu")
    assert "florence-community" in refused.value.hint

    broken = tmp_path / "broken-llava"
    broken.mkdir()
    for f in models["llava"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = load_file(broken / "model.safetensors")
    weights.pop(sorted(weights)[0])
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CaptionerError, match="weights the model needs are not in its files"):
        load_captioner(broken, "cpu")

    untemplated = tmp_path / "qwen-without-template"
    untemplated.mkdir()
    for f in models["qwen2-vl"].iterdir():
        if f.name != "chat_template.jinja":
            (untemplated / f.name).write_bytes(f.read_bytes())
    with pytest.raises(CaptionerError, match="no chat template"):
        load_captioner(untemplated, "cpu")

    with pytest.raises(CaptionerError, match="--quantize 4bit needs a CUDA GPU"):
        load_captioner(models["llava"], "cpu", quantize="4bit")

    size = memory.weights_bytes(models["qwen2-vl"])
    monkeypatch.setattr(memory, "free_bytes", lambda device: (size, "system"))  # fp32 on a CPU: 1.5x needed
    with pytest.raises(CaptionerError, match=r"needs about .* system memory is free"):
        load_captioner(models["qwen2-vl"], "cpu")
