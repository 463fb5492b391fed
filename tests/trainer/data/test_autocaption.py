"""`lora-studio dataset caption --model`: both back ends on tiny models built here, the modes, thresholds,
trigger word, cancel, and captions the user edited kept."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from tests.support.caption_models import build_blip, build_tagger
from trainer.data.captioners.tagger import CHARACTER, GENERAL, RATING

TAGS = [("1girl", GENERAL, 0.9), ("red_hair", GENERAL, 0.5), ("smile", GENERAL, 0.3), ("^_^", GENERAL, 0.6),
        ("hatsune_miku", CHARACTER, 0.95), ("rin", CHARACTER, 0.7), ("explicit", RATING, 0.99)]


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "trainer", "dataset", "caption", *map(str, args)],
                          capture_output=True, text=True, timeout=120, input=stdin)


def events(result):
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    return build_tagger(tmp_path_factory.mktemp("tagger"), TAGS)


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (40 + i, 30), (i * 50, 10, 10)).save(folder / f"img{i}.png")
    (folder / "img0.txt").write_text("my own words, blue eyes", encoding="utf-8")
    return folder


def caption(folder, name):
    return (folder / f"{name}.txt").read_text(encoding="utf-8").strip()


def test_tagger_fills_empty_captions_with_thresholds_and_characters_first(dataset, tagger):
    result = run(dataset, "--model", tagger, "--trigger", "zkx", "--exclude", "smile")
    assert result.returncode == 0, result.stderr
    assert caption(dataset, "img1") == "zkx, hatsune miku, 1girl, ^_^, red hair"   # rin < 0.85, rating never
    assert caption(dataset, "img0") == "my own words, blue eyes"                   # fill leaves it alone
    assert "3 captioned, 1 skipped" in result.stderr


def test_thresholds_and_underscores_are_options(dataset, tagger):
    run(dataset, "--model", tagger, "--threshold", "0.25", "--character-threshold", "0.6", "--keep-underscores")
    assert caption(dataset, "img2") == "hatsune_miku, rin, 1girl, ^_^, red_hair, smile"


def test_append_adds_only_new_tags_and_overwrite_needs_force_for_user_captions(dataset, tagger):
    run(dataset, "--model", tagger, "--mode", "append", "--threshold", "0.8")
    assert caption(dataset, "img0") == "my own words, blue eyes, hatsune miku, 1girl"
    result = run(dataset, "--model", tagger, "--mode", "overwrite", "--events", "jsonl")
    skipped = {e["path"].rsplit("/", 1)[-1]: e["reason"] for e in events(result) if e.get("status") == "skipped"}
    assert skipped == {}, "captions we wrote ourselves (unchanged since) may be replaced"
    (dataset / "img1.txt").write_text("hand edited", encoding="utf-8")
    result = run(dataset, "--model", tagger, "--mode", "overwrite", "--events", "jsonl")
    skipped = {e["path"].rsplit("/", 1)[-1]: e["reason"] for e in events(result) if e.get("status") == "skipped"}
    assert "edited by you" in skipped["img1.png"] and caption(dataset, "img1") == "hand edited"
    run(dataset, "--model", tagger, "--mode", "overwrite", "--force", "--only", dataset / "img1.png")
    assert caption(dataset, "img1").startswith("hatsune miku")


def test_overwrite_never_replaces_a_caption_written_before_any_auto_caption(dataset, tagger):
    result = run(dataset, "--model", tagger, "--mode", "overwrite", "--only", dataset / "img0.png")
    assert "written by you" in result.stdout and caption(dataset, "img0") == "my own words, blue eyes"


def test_blip_writes_sentences_through_the_same_command(dataset, tmp_path):
    model = build_blip(tmp_path / "blip")
    result = run(dataset, "--model", model, "--trigger", "zkx", "--events", "jsonl")
    assert result.returncode == 0, result.stderr
    written = [e for e in events(result) if e.get("status") == "written"]
    assert len(written) == 3 and written[-1]["done"] == 4 and written[-1]["total"] == 4
    assert caption(dataset, "img3").startswith("zkx, cat cat")
    assert events(result)[-1] == {"v": 1, "type": "caption_summary", "written": 3, "skipped": 1,
                                  "stopped": False}


def test_stop_command_keeps_the_captions_already_written(dataset, tagger):
    for i in range(4, 40):
        Image.new("RGB", (32, 32)).save(dataset / f"img{i}.png")
    result = run(dataset, "--model", tagger, "--events", "jsonl", stdin='{"cmd": "stop"}\n')
    summary = events(result)[-1]
    assert summary["type"] == "caption_summary" and summary["stopped"] and summary["written"] < 39
    for event in events(result)[:-1]:
        if event["status"] == "written":
            assert (dataset / event["path"].rsplit("/", 1)[-1]).with_suffix(".txt").exists()


def test_clear_errors_for_a_folder_without_a_model_and_a_mismatched_tag_list(dataset, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(dataset, "--model", empty, "--events", "jsonl")
    assert result.returncode == 2
    error = events(result)[0]
    assert error["type"] == "error" and "holds no supported captioning model" in error["message"]
    assert "selected_tags.csv" in error["hint"]
    bad = build_tagger(tmp_path / "bad", TAGS, outputs=len(TAGS) + 3)
    result = run(dataset, "--model", bad)
    assert result.returncode == 2 and f"scores {len(TAGS) + 3} tags but selected_tags.csv lists {len(TAGS)}" \
        in result.stderr


def test_a_model_bigger_than_free_memory_is_refused_before_loading(tmp_path, monkeypatch):
    from trainer.data.captioners import base

    monkeypatch.setattr(base, "_free_bytes", lambda device: (10 * 2**20, "system"))
    model = build_tagger(tmp_path / "t", TAGS)
    (model / "extra.safetensors").write_bytes(b"\0" * (8 * 2**20))
    with pytest.raises(base.CaptionerError, match=r"needs about 12 MB and only 10 MB"):
        base.check_memory(model, "cpu")
