"""`dataset import`: every kind of file lands or is refused with its reason; originals never change."""

import hashlib
import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from trainer.data.importer import import_sources


def _png_bytes(size=(300, 300), mode="RGB", color=(200, 30, 30)):
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png(width=100_000, height=100_000) -> bytes:
    """A valid PNG header declaring 10^10 pixels; tiny on disk, never decoded."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _make_sources(src):
    src.mkdir()
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when shown
    photo.save(src / "rotated.jpg", exif=exif)
    photo.save(src / "plain.jpg")
    (src / "plain.txt").write_text("zkx, a photo", encoding="utf-8")
    Image.new("RGBA", (300, 300), (255, 0, 0, 0)).save(src / "transparent.png")
    Image.new("LA", (300, 300), (10, 0)).save(src / "la.png")
    pal = Image.new("P", (300, 300), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] * 128)
    pal.save(src / "palette_transparent.png", transparency=1)
    Image.new("CMYK", (300, 300), (0, 255, 255, 0)).save(src / "cmyk.jpg")
    Image.fromarray(np.full((300, 300), 40000, dtype=np.uint16)).save(src / "sixteen.png")
    frames = [Image.new("RGB", (300, 300), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    photo.save(src / "photo.webp")
    photo.save(src / "photo.bmp")
    photo.save(src / "photo.tiff")
    (src / "empty.png").write_bytes(b"")
    (src / "truncated.jpg").write_bytes((src / "plain.jpg").read_bytes()[:2000])
    (src / "notes.png").write_text("I am not an image")
    (src / "readme.md").write_text("hello")
    Image.new("RGB", (100, 100)).save(src / "tiny.png")
    (src / "bomb.png").write_bytes(_bomb_png())
    (src / "zz_dupe.jpg").write_bytes((src / "plain.jpg").read_bytes())
    with zipfile.ZipFile(src / "pack.zip", "w") as zf:
        zf.writestr("nested/good.png", _png_bytes())
        zf.writestr("nested/good.txt", "zkx, from a zip")
        zf.writestr("../evil.png", _png_bytes(color=(1, 2, 3)))
        zf.writestr("/abs/evil2.png", _png_bytes(color=(4, 5, 6)))
    return src


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_every_kind_of_file_lands_or_is_refused_with_its_reason(tmp_path):
    src = _make_sources(tmp_path / "src")
    before = _hashes(src)
    into = tmp_path / "work" / "dataset"
    report = import_sources([src], into)
    by_name = {e.source.replace(str(src) + "/", ""): e for e in report.entries}

    for name in ("rotated.jpg", "plain.jpg", "transparent.png", "la.png", "palette_transparent.png",
                 "cmyk.jpg", "sixteen.png", "anim.gif", "photo.webp", "photo.bmp", "photo.tiff",
                 "pack.zip!nested/good.png"):
        assert by_name[name].status == "imported", (name, by_name[name].reason)
    for name, words in {"empty.png": "empty file", "truncated.jpg": "truncated", "notes.png": "not an image",
                        "readme.md": "not an image", "tiny.png": "too small", "bomb.png": "decompression bomb",
                        "pack.zip!../evil.png": "'..'", "pack.zip!/abs/evil2.png": "absolute"}.items():
        assert by_name[name].status == "refused" and words in by_name[name].reason, (name, by_name[name])
    assert by_name["zz_dupe.jpg"].status == "duplicate"

    assert _hashes(src) == before, "originals must be byte-identical"
    assert not (tmp_path / "work" / "evil.png").exists() and not list(tmp_path.glob("**/evil2.png"))
    out = {p.name for p in into.iterdir()}
    assert "plain.jpg" in out and "plain.txt" in out and "good.txt" in out

    def rgb(name):
        return Image.open(into / by_name[name].dest)
    assert rgb("rotated.jpg").size == (300, 400)               # EXIF orientation applied
    assert rgb("transparent.png").getpixel((5, 5)) == (255, 255, 255)  # transparency onto white
    assert rgb("palette_transparent.png").getpixel((5, 5)) == (255, 255, 255)
    assert rgb("sixteen.png").mode == "RGB" and rgb("sixteen.png").getpixel((0, 0))[0] in (155, 156)
    assert rgb("anim.gif").getpixel((0, 0)) == (255, 0, 0)     # first frame
    assert rgb("cmyk.jpg").mode == "RGB"
    assert (into / "plain.jpg").read_bytes() == (src / "plain.jpg").read_bytes()  # copied, not re-encoded


def test_reimport_finds_duplicates_even_after_conversion(tmp_path):
    src = tmp_path / "a"
    src.mkdir()
    Image.new("RGBA", (300, 300), (0, 0, 255, 128)).save(src / "x.png")
    into = tmp_path / "ds"
    assert import_sources([src], into).count("imported") == 1
    again = import_sources([src], into)
    assert again.count("duplicate") == 1 and again.count("imported") == 0


def test_names_are_made_safe_and_unique(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "CON.png").write_bytes(_png_bytes(color=(1, 1, 1)))
    (b / "CON.png").write_bytes(_png_bytes(color=(2, 2, 2)))
    report = import_sources([a, b], tmp_path / "ds")
    assert sorted(e.dest for e in report.entries) == ["CON_-1.png", "CON_.png"]


def test_cli_exits_nonzero_only_when_nothing_imported(tmp_path):
    (tmp_path / "junk.png").write_text("nope")
    (tmp_path / "ok.png").write_bytes(_png_bytes())
    run = [sys.executable, "-m", "trainer", "dataset", "import"]
    bad = subprocess.run(run + [str(tmp_path / "junk.png"), "--into", str(tmp_path / "ds"), "--json"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and json.loads(bad.stdout)["refused"] == 1  # the input's fault, not a bug
    good = subprocess.run(run + [str(tmp_path / "junk.png"), str(tmp_path / "ok.png"), "--into",
                                 str(tmp_path / "ds"), "--json"], capture_output=True, text=True)
    assert good.returncode == 0 and json.loads(good.stdout)["imported"] == 1


@pytest.mark.parametrize("cancel_after", [2])
def test_progress_and_cancel(tmp_path, cancel_after):
    src = tmp_path / "s"
    src.mkdir()
    for i in range(5):
        (src / f"{i}.png").write_bytes(_png_bytes(color=(i, i, i)))
    seen = []
    report = import_sources([src], tmp_path / "ds", progress=lambda d, t: seen.append((d, t)),
                            cancel=lambda: len(seen) >= cancel_after)
    assert report.cancelled and report.count("imported") == cancel_after and seen[-1] == (2, 5)


def test_a_duplicate_hands_its_caption_to_the_copy_that_was_kept(tmp_path):
    src, into = tmp_path / "src", tmp_path / "ds"
    src.mkdir()
    (src / "img00.png").write_bytes(_png_bytes())
    (src / "img00.txt").write_text("zkx, red hair", encoding="utf-8")
    (src / "img00 copy.png").write_bytes(_png_bytes())  # sorts first, so it is the copy kept
    report = import_sources([src], into)
    dup = next(e for e in report.entries if e.status == "duplicate")
    assert dup.dest == "img00 copy.png" and "img00 copy.txt" in dup.reason
    assert (into / "img00 copy.txt").read_text(encoding="utf-8") == "zkx, red hair"


def test_a_kept_caption_is_never_replaced_by_a_duplicates(tmp_path):
    src, into = tmp_path / "src", tmp_path / "ds"
    src.mkdir()
    (src / "a.png").write_bytes(_png_bytes())
    (src / "a.txt").write_text("mine", encoding="utf-8")
    import_sources([src / "a.png"], into)
    (src / "b.png").write_bytes(_png_bytes())
    (src / "b.txt").write_text("other", encoding="utf-8")
    report = import_sources([src / "b.png"], into)
    assert report.entries[0].status == "duplicate" and "not used" in report.entries[0].reason
    assert (into / "a.txt").read_text(encoding="utf-8") == "mine"
