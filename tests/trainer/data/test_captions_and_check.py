"""Caption editing across a dataset and the health report, through the library and the CLI."""

import json
import random
import subprocess
import sys

from PIL import Image

from trainer.data import captions as c
from trainer.data.health import check_dataset
from trainer.data.spec import read_dataset
from trainer.shared.buckets import choose_bucket, crop_plan, make_buckets


def _dataset(root, captions):
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, caption) in enumerate(captions.items()):
        Image.new("RGB", (512 + 64 * i, 512), (i * 40, 100, 200 - i * 30)).save(root / f"{name}.png")
        if caption is not None:
            (root / f"{name}.txt").write_bytes(caption)
    return root


def test_caption_operations_keep_bom_crlf_and_report_bad_encodings(tmp_path):
    root = _dataset(tmp_path / "d", {"a": b"\xef\xbb\xbfred hair, smile\r\n", "b": b"smile, hat",
                                     "c": "caf\xe9, hat".encode("latin-1"), "d": None})
    images = sorted(root.glob("*.png"))
    report = c.edit_captions(images, lambda t: c.set_trigger(t, "zkx"))
    assert (root / "a.txt").read_text(encoding="utf-8") == "zkx, red hair, smile\n"
    assert (root / "d.txt").read_text(encoding="utf-8") == "zkx\n"
    assert any("c.txt" in s and "UTF-8" in s for s in report.skipped)
    assert (root / "c.txt").read_bytes() == "caf\xe9, hat".encode("latin-1")  # never mangled
    c.edit_captions(images, lambda t: c.replace_tag(t, "hat", "cap"))
    c.edit_captions(images, lambda t: c.remove_tag(t, "smile"))
    assert (root / "b.txt").read_text(encoding="utf-8") == "zkx, cap\n"
    c.find_replace_captions(images, r"red (\w+)", r"crimson \1", regex=True)
    assert c.tag_frequency(images) == {"zkx": 3, "crimson hair": 1, "cap": 1}


def test_process_caption_keeps_prefix_and_drops_by_rate():
    rng = random.Random(0)
    outs = {c.process_caption("zkx, a, b, c, d", 1, True, 0.0, 0.0, rng) for _ in range(30)}
    assert all(o.startswith("zkx, ") for o in outs) and len(outs) > 3
    assert c.process_caption("zkx, a", 1, False, 0.0, 1.0, rng) == ""
    assert c.process_caption("zkx, a, b", 1, False, 1.0, 0.0, rng) == "zkx"


def test_buckets_follow_the_base_area_without_upscaling():
    for base in (512, 768, 1024):
        buckets = make_buckets(base)
        assert (base, base) in buckets and all(w % 64 == 0 and h % 64 == 0 for w, h in buckets)
        assert all(w * h <= base * base for w, h in buckets)
    buckets = make_buckets(1024)
    assert choose_bucket(2000, 1000, buckets).size[0] > choose_bucket(2000, 1000, buckets).size[1]
    small = choose_bucket(600, 600, buckets)
    assert small.size == (576, 576) and not small.upscaled
    assert choose_bucket(600, 600, buckets, allow_upscale=True).upscaled
    (rw, rh), (top, left) = crop_plan(1200, 900, (1152, 832))
    assert rw >= 1152 and rh >= 832 and top == (rh - 832) // 2 and left == (rw - 1152) // 2


def test_health_report_names_the_offending_files(tmp_path):
    root = _dataset(tmp_path / "d", {"a": b"zkx, " + b"very long caption words " * 60, "b": None,
                                     "c": b"zkx, hat"})
    Image.new("RGB", (100, 100)).save(root / "small.png")
    Image.new("RGB", (512, 512), (0, 100, 200)).save(root / "a_copy.png")
    report = check_dataset(root, "sd15", batch_size=2)
    kinds = {w.kind: w.files for w in report.warnings}
    assert any("a.png" in f for f in kinds["long_caption"])
    assert any("b.png" in f for f in kinds["no_caption"])
    assert any("small.png" in f for f in kinds["too_small"])
    assert any("a_copy.png" in f or "a.png" in f for f in kinds["near_duplicate"])
    assert report.images == 5 and report.steps_per_epoch >= 3
    assert report.tag_frequency["zkx"] == 2


def test_kohya_folders_and_dataset_toml_define_subsets(tmp_path):
    root = tmp_path / "k"
    _dataset(root / "10_zkx", {"a": b"zkx"})
    _dataset(root / "1_reg_person", {"r": b"person"})
    subsets = {s.name: s for s in read_dataset(root)}
    assert subsets["zkx"].repeats == 10 and not subsets["zkx"].is_reg and subsets["reg_person"].is_reg
    (root / "dataset.toml").write_text('[[subset]]\nfolder = "10_zkx"\nrepeats = 3\nshuffle_tags = true\n')
    (only,) = read_dataset(root)
    assert only.repeats == 3 and only.shuffle_tags
    (root / "dataset.toml").write_text('[[subset]]\nfolder = "x"\nrepeat = 3\n')
    try:
        read_dataset(root)
    except Exception as exc:  # DatasetError names the file and key
        assert "dataset.toml" in str(exc) and "repeat" in str(exc)
    else:
        raise AssertionError("unknown key accepted")


def test_check_and_caption_cli(tmp_path):
    root = _dataset(tmp_path / "d", {"a": b"hat", "b": b"hat, smile"})
    run = [sys.executable, "-m", "trainer", "dataset"]
    out = subprocess.run(run + ["caption", str(root), "--trigger", "zkx", "--json", "--frequency"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tag_frequency"] == {"zkx": 2, "hat": 2, "smile": 1}
    check = subprocess.run(run + ["check", str(root), "--arch", "sdxl", "--json"], capture_output=True, text=True)
    data = json.loads(check.stdout)
    assert data["arch"] == "sdxl" and data["images"] == 2 and data["bucket_plan"]["buckets"]


def test_check_counts_steps_per_epoch_as_training_does(tmp_path):
    """Folder repeats (`10_zkx`) times dataset.repeats, per bucket, divided by the batch size: the same
    number the training page's estimate and `train` use (trainer.shared.steps)."""
    root = tmp_path / "k"
    _dataset(root / "10_zkx", {"a": b"zkx", "b": b"zkx"})
    Image.new("RGB", (768, 512)).save(root / "10_zkx" / "b.png")  # a 3:2 bucket beside a's square one
    out = subprocess.run([sys.executable, "-m", "trainer", "dataset", "check", str(root), "--batch-size", "4",
                          "--repeats", "3", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["steps_per_epoch"] == 2 * 8  # each bucket: 1 image x 10 x 3 = 30 -> 8 batches
