"""`lora-studio dataset caption --model`: both back ends on tiny models built here, run through the CLI as a
subprocess: modes, thresholds, exclude list, underscores, trigger word, captions the user edited kept, stop
and SIGTERM mid-run, and the errors a user can act on."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.support.caption_models import BLIP_TOKENS, CAPTION_WORD, build_blip, build_tagger
from trainer.data.captioning.tagger import CHARACTER, GENERAL, RATING

TAGS = [("1girl", GENERAL, 0.9), ("red_hair", GENERAL, 0.5), ("smile", GENERAL, 0.3), ("^_^", GENERAL, 0.6),
        ("hatsune_miku", CHARACTER, 0.95), ("rin", CHARACTER, 0.7), ("explicit", RATING, 0.99)]
USER_CAPTION = "my own words, blue eyes"
COMMAND = [sys.executable, "-m", "trainer", "dataset", "caption"]


def run(*args, stdin=None, env=None):
    return subprocess.run(COMMAND + list(map(str, args)), capture_output=True, text=True, timeout=120,
                          input=stdin, env=env)


def events(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def by_name(evts, status):
    return {e["path"].rsplit("/", 1)[-1]: e for e in evts if e["type"] == "caption" and e["status"] == status}


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    return build_tagger(tmp_path_factory.mktemp("tagger"), TAGS)


@pytest.fixture
def dataset(tmp_path):
    """img0 has the user's caption, img3 an empty caption file, img1 and img2 none."""
    folder = tmp_path / "ds"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (40 + i, 30), (i * 50, 10, 10)).save(folder / f"img{i}.png")
    (folder / "img0.txt").write_text(USER_CAPTION, encoding="utf-8")
    (folder / "img3.txt").write_text("", encoding="utf-8")
    return folder


def caption(folder, name):
    return (folder / f"{name}.txt").read_text(encoding="utf-8").strip()


def test_fill_captions_only_images_without_one_with_default_thresholds(dataset, tagger):
    result = run(dataset, "--model", tagger, "--trigger", "zkx", "--exclude", "Red Hair")
    assert result.returncode == 0, result.stderr
    # rin (0.7) is under the character threshold 0.85, smile (0.3) under 0.35, ratings never written;
    # characters come first; the kaomoji keeps its underscore; the excluded tag matches in any spelling
    assert caption(dataset, "img1") == "zkx, hatsune miku, 1girl, ^_^"
    assert caption(dataset, "img3") == "zkx, hatsune miku, 1girl, ^_^"    # an empty caption counts as none
    assert caption(dataset, "img0") == USER_CAPTION
    assert "already has a caption" in result.stdout and "3 captioned, 1 skipped" in result.stderr
    state = json.loads((dataset / ".lora-studio" / "captioned.json").read_text(encoding="utf-8"))
    assert sorted(state) == ["img1.png", "img2.png", "img3.png"]


def test_both_thresholds_and_underscores_are_options(dataset, tagger):
    run(dataset, "--model", tagger, "--threshold", "0.25", "--character-threshold", "0.6", "--keep-underscores")
    assert caption(dataset, "img2") == "hatsune_miku, rin, 1girl, ^_^, red_hair, smile"


def test_append_adds_only_new_tags_keeps_one_trigger_and_skips_edited_captions(dataset, tagger):
    run(dataset, "--model", tagger, "--trigger", "zkx", "--threshold", "0.8")
    assert caption(dataset, "img1") == "zkx, hatsune miku, 1girl"
    (dataset / "img2.txt").write_text("zkx, hatsune miku, my fix", encoding="utf-8")
    result = run(dataset, "--model", tagger, "--mode", "append", "--trigger", "zkx", "--events", "jsonl")
    assert caption(dataset, "img1") == "zkx, hatsune miku, 1girl, ^_^, red hair"
    assert caption(dataset, "img0") == f"zkx, {USER_CAPTION}, hatsune miku, 1girl, ^_^, red hair"
    assert caption(dataset, "img2") == "zkx, hatsune miku, my fix"
    assert "edited by you" in by_name(events(result.stdout), "skipped")["img2.png"]["reason"]


def test_overwrite_replaces_only_our_own_captions_unless_forced(dataset, tagger):
    run(dataset, "--model", tagger, "--threshold", "0.8")
    (dataset / "img1.txt").write_text("hand edited\r\n", encoding="utf-8")
    result = run(dataset, "--model", tagger, "--mode", "overwrite", "--events", "jsonl")
    assert result.returncode == 0, result.stderr
    evts = events(result.stdout)
    skipped, written = by_name(evts, "skipped"), by_name(evts, "written")
    assert sorted(written) == ["img2.png", "img3.png"] and caption(dataset, "img2").endswith("red hair")
    assert "edited by you since the last auto-caption; use --force" in skipped["img1.png"]["reason"]
    assert "written by you" in skipped["img0.png"]["reason"] and caption(dataset, "img0") == USER_CAPTION
    assert caption(dataset, "img1") == "hand edited"
    assert evts[-2] == {"v": 1, "type": "caption_summary", "written": 2, "skipped": 2, "stopped": False}
    assert evts[-1]["type"] == "done" and not evts[-1]["stopped_early"]
    run(dataset, "--model", tagger, "--mode", "overwrite", "--force", "--only", dataset / "img1.png",
        dataset / "img0.png")
    assert caption(dataset, "img1") == caption(dataset, "img0") == "hatsune miku, 1girl, ^_^, red hair"


def test_blip_writes_a_sentence_through_the_same_command(dataset, tmp_path):
    model = build_blip(tmp_path / "blip")
    result = run(dataset, "--model", model, "--mode", "append", "--trigger", "zkx", "--events", "jsonl")
    assert result.returncode == 0, result.stderr
    sentence = " ".join([CAPTION_WORD] * BLIP_TOKENS)
    assert caption(dataset, "img2") == f"zkx, {sentence}"
    assert caption(dataset, "img0") == f"zkx, {USER_CAPTION}, {sentence}"
    first = events(result.stdout)[0]
    assert first == {"v": 1, "type": "caption", "path": str(dataset / "img0.png"),
                     "caption": f"zkx, {USER_CAPTION}, {sentence}", "status": "written", "reason": "",
                     "done": 1, "total": 4}


@pytest.mark.parametrize("how", ["stop-command", "sigterm"])
def test_a_stop_mid_run_keeps_every_caption_already_written(tmp_path, tagger, how):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(20):
        Image.new("RGB", (32, 32), (i * 10, 0, 0)).save(folder / f"img{i:02d}.png")
    env = {**os.environ, "LORA_STUDIO_FAULT": "write.txt:sleep0.05"}  # 50 ms a caption: 1 s in all
    proc = subprocess.Popen(COMMAND + [str(folder), "--model", str(tagger), "--events", "jsonl"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    if how == "stop-command":
        proc.stdin.write('{"cmd": "stop"}\n')
        proc.stdin.flush()
    else:
        proc.send_signal(signal.SIGTERM)
    rest, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    evts = events(first + rest)
    written = by_name(evts, "written")
    assert 1 <= len(written) < 20 and evts[-1]["type"] == "done" and evts[-1]["stopped_early"]
    for name, event in written.items():
        assert caption(folder, name[:-4]) == event["caption"] == "hatsune miku, 1girl, ^_^, red hair"
    assert len(list(folder.glob("*.txt"))) == len(written) and not list(folder.glob(".*.tmp"))
    state = json.loads((folder / ".lora-studio" / "captioned.json").read_text(encoding="utf-8"))
    assert sorted(state) == sorted(written)


def test_errors_name_the_folder_and_what_to_do(dataset, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(dataset, "--model", empty, "--events", "jsonl")
    assert result.returncode == 2 and not list(dataset.glob("img[12].txt"))
    error = events(result.stdout)[-1]
    assert error["type"] == "error" and error["message"] == f"{empty} holds no supported captioning model"
    assert all(name in error["hint"] for name in ("model.onnx", "selected_tags.csv", "config.json"))

    bad = build_tagger(tmp_path / "bad", TAGS, outputs=len(TAGS) + 3)
    result = run(dataset, "--model", bad)
    assert result.returncode == 2
    assert f"{bad / 'model.onnx'} scores {len(TAGS) + 3} tags but selected_tags.csv lists {len(TAGS)}" \
        in result.stderr and "different models" in result.stderr

    result = run(empty, "--model", bad, "--events", "jsonl")
    assert result.returncode == 2 and "holds no images to caption" in events(result.stdout)[-1]["message"]


def test_exit_code_says_when_nothing_could_be_captioned(tmp_path, tagger):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (32, 32)).save(folder / "latin.png")
    (folder / "latin.txt").write_bytes("café".encode("latin-1"))
    result = run(folder, "--model", tagger, "--mode", "overwrite", "--force", "--events", "jsonl")
    assert result.returncode == 1
    evts = events(result.stdout)
    skipped = by_name(evts, "skipped")
    assert "not UTF-8" in skipped["latin.png"]["reason"] and "cannot caption it" in skipped["truncated.png"]["reason"]
    assert (folder / "latin.txt").read_bytes() == "café".encode("latin-1")   # reported, never mangled
    assert evts[-2]["type"] == "error" and "none of the 2 images could be captioned" in evts[-2]["message"]


def test_tagger_input_is_bgr_padded_on_white_at_the_model_side(tagger):
    from trainer.data.captioning import load_captioner

    model = load_captioner(tagger / "model.onnx", "cpu", max_new_tokens=3)  # a file picked: its folder
    image = Image.new("RGBA", (32, 16), (255, 0, 0, 255))
    image.paste((0, 0, 255, 0), (16, 0, 32, 16))  # right half transparent (blue underneath)
    pixels = model.pixels(image)
    assert pixels.shape == (1, 32, 32, 3) and pixels.dtype == np.float32
    assert pixels[0, 2, 16].tolist() == [255, 255, 255]           # padding above the image: white
    assert pixels[0, 16, 4].tolist() == [0, 0, 255]                # red, in BGR order
    assert pixels[0, 16, 28].tolist() == [255, 255, 255]          # transparent: white, not blue
    with pytest.raises(TypeError, match="unknown captioner option"):
        load_captioner(tagger, "cpu", threshold=0.2)


def test_a_model_bigger_than_free_memory_is_refused_before_loading(tmp_path, monkeypatch):
    from trainer.data.captioning import CaptionerError, load_captioner, memory

    monkeypatch.setattr(memory, "free_bytes", lambda device: (10 * 2**20, "system"))
    model = build_tagger(tmp_path / "t", TAGS)
    (model / "extra.safetensors").write_bytes(b"\0" * (8 * 2**20))
    with pytest.raises(CaptionerError, match=r"needs about 12 MB and only 10 MB of system memory"):
        load_captioner(model, "cpu")


def test_run_streams_results_and_checks_the_cancel_flag_between_images(tmp_path):
    from trainer.data.captioning import Captioner
    from trainer.data.captioning.run import auto_caption

    class Flaky(Captioner):
        calls = 0

        def caption(self, image):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("CUDA out of memory")  # one image's failure costs only that image
            return "b_tag, a tag"

    folder = tmp_path / "ds"
    folder.mkdir()
    images = [folder / f"img{i}.png" for i in range(4)]
    for path in images:
        Image.new("RGB", (8, 8)).save(path)
    results = []
    for result in auto_caption(folder, images, Flaky(), trigger="zkx", should_stop=lambda: len(results) == 3):
        results.append(result)
    assert [r.status for r in results] == ["written", "skipped", "written"]
    assert results[1].failed and results[1].reason == "cannot caption it: CUDA out of memory"
    assert caption(folder, "img2") == "zkx, b_tag, a tag" and not (folder / "img3.txt").exists()
