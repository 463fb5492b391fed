"""`dataset prepare-captions`: the wizard's caption strategies, previewed before anything is written."""

import json
import subprocess
import sys


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, timeout=120)


def _dataset(folder, captions):
    from PIL import Image

    folder.mkdir()
    for i, caption in enumerate(captions):
        Image.new("RGB", (64, 64), (i * 30, 0, 0)).save(folder / f"img{i}.png")
        if isinstance(caption, bytes):
            (folder / f"img{i}.txt").write_bytes(caption)
        else:
            (folder / f"img{i}.txt").write_text(caption, encoding="utf-8")
    return folder


def test_character_dry_run_suggests_constant_tags_and_writes_nothing(tmp_path):
    folder = _dataset(tmp_path / "ds", ["cat, orange fur, sitting", "cat, orange fur, sleeping",
                                        "orange fur, cat, jumping", "Cat, orange fur, on a sofa"])
    result = run_cli("dataset", "prepare-captions", str(folder), "--kind", "character", "--trigger", "zkx",
                     "--class-word", "cat", "--json")
    answer = json.loads(result.stdout)
    assert answer["suggested_prune"] == ["orange fur"]   # the class word is kept, not pruned
    assert [c["after"] for c in answer["changes"]][:2] == ["zkx, cat, sitting", "zkx, cat, sleeping"]
    assert (folder / "img0.txt").read_text(encoding="utf-8") == "cat, orange fur, sitting"


def test_style_apply_prunes_style_words_and_leaves_other_encodings_alone(tmp_path):
    latin1 = "aquarelle, café, morning".encode("latin-1")
    folder = _dataset(tmp_path / "ds", ["watercolor, a boat, harbour", "watercolor (medium), a hill", latin1])
    result = run_cli("dataset", "prepare-captions", str(folder), "--kind", "style", "--trigger", "wtrc",
                     "--apply", "--json")
    answer = json.loads(result.stdout)
    assert set(answer["pruned"]) == {"watercolor", "watercolor (medium)"} and answer["written"] == 2
    assert (folder / "img0.txt").read_text(encoding="utf-8").strip() == "wtrc, a boat, harbour"
    assert (folder / "img2.txt").read_bytes() == latin1
    assert "not UTF-8" in answer["changes"][2]["problem"]


def test_explicit_prune_list_replaces_the_suggestion(tmp_path):
    folder = _dataset(tmp_path / "ds", ["a, b, c", "a, b, d"])
    result = run_cli("dataset", "prepare-captions", str(folder), "--kind", "character", "--trigger", "t",
                     "--prune", "c", "--apply")
    assert result.returncode == 0 and "2 captions written" in result.stderr
    assert (folder / "img0.txt").read_text(encoding="utf-8").strip() == "t, a, b"


def test_system_reports_no_cuda_as_a_fact():
    report = json.loads(run_cli("system", "--json").stdout)
    assert report["cuda"] is False and report["gpus"] == []
    names = {f["name"]: f for f in report["optional"]}
    assert not names["CUDA GPU"]["present"] and "CPU" in names["CUDA GPU"]["cost"]
    assert {"xformers", "bitsandbytes"} <= set(names)
    assert set(report["memory_tier"]) == {f["preset_prefix"] for f in report["families"]} >= {"sd15", "sdxl"}
    assert set(report["memory_tier"].values()) == {"cpu"}
    assert "memory tier: --preset cpu" in run_cli("system").stdout


def test_character_keeps_common_tags_for_pose_place_clothing_and_expression(tmp_path):
    captions = ["woman, red hair, blue eyes, sitting, indoors, smile, white shirt",
                "woman, red hair, blue eyes, standing, outdoors, smile, white shirt",
                "woman, red hair, blue eyes, sitting, indoors, closed eyes, upper body",
                "woman, red hair, blue eyes, standing, outdoors, smile, white shirt"]
    folder = _dataset(tmp_path / "ds", captions)
    answer = json.loads(run_cli("dataset", "prepare-captions", str(folder), "--kind", "character",
                                "--trigger", "zkx", "--class-word", "woman", "--json").stdout)
    assert answer["suggested_prune"] == ["red hair", "blue eyes"]
    assert answer["changes"][0]["after"] == "zkx, woman, sitting, indoors, smile, white shirt"
