"""Hostile files (issue 29): hand-made safetensors headers, legacy pickles, LoRAs holding NaN, LoRAs of
two families under one name, huge images, damaged archives and import indexes. Each is refused or left
out with a message naming the file, never a traceback, and nothing of the user's changes."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save, save_file

from tests.support.engine import REPO, _env, make_dataset, run_cli, tiny_config
from tests.support.loras import our_lora
from trainer.models.safe_load import read_header, read_pickle_checkpoint, read_tensor_index
from trainer.shared.errors import ModelFileError, UserError


def _with_header(header: object, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
BAD_HEADERS = {
    "a JSON array": ([ENTRY], 8),
    "a list as __metadata__": ({"__metadata__": ["a"], "t": ENTRY}, 8),
    "a number in __metadata__": ({"__metadata__": {"a": 1}, "t": ENTRY}, 8),
    "an entry that is not an object": ({"t": 5}, 8),
    "an unknown dtype": ({"t": dict(ENTRY, dtype="F99")}, 8),
    "a shape that does not fit its span": ({"t": dict(ENTRY, shape=[3])}, 8),
    "reversed offsets": ({"t": dict(ENTRY, data_offsets=[8, 0])}, 8),
    "negative offsets": ({"t": dict(ENTRY, data_offsets=[-8, 0])}, 8),
    "overlapping spans": ({"a": ENTRY, "b": dict(ENTRY, data_offsets=[4, 12])}, 12),
    "a gap between spans": ({"a": ENTRY, "b": dict(ENTRY, data_offsets=[12, 20])}, 20),
    "bytes after the last tensor": ({"t": ENTRY}, 16),
    "a string as shape": ({"t": dict(ENTRY, shape="2")}, 8),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_safetensors_headers_are_checked_as_strictly_as_the_library_does(case, tmp_path):
    header, data_bytes = BAD_HEADERS[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_with_header(header, bytes(data_bytes)))
    with pytest.raises(SafetensorError):  # the safetensors library refuses it too: we are not stricter than it
        with safe_open(str(path), "pt") as f:
            [f.get_tensor(k) for k in f.keys()]
    with pytest.raises(ModelFileError, match="bad.safetensors"):
        read_header(path)
    with pytest.raises(ModelFileError):
        read_tensor_index(path)  # what the streaming loader reads: overlapping spans once trained as garbage


def test_inspect_names_a_hand_made_header_without_a_traceback(tmp_path):
    path = tmp_path / "odd.safetensors"
    path.write_bytes(_with_header({"t": 5}, bytes(8)))
    code, _, stderr = run_cli("inspect", str(path))
    assert code == 2 and "odd.safetensors is not a valid safetensors file" in stderr and "Traceback" not in stderr


def test_a_valid_file_with_zero_sized_and_packed_tensors_is_accepted(tmp_path):
    path = tmp_path / "good.safetensors"
    path.write_bytes(save({"a": torch.ones(3), "empty": torch.zeros(0), "b": torch.ones(2, dtype=torch.float16)},
                          metadata={"k": "v"}))
    shapes, metadata = read_header(path)
    assert shapes == {"a": (3,), "empty": (0,), "b": (2,)} and metadata == {"k": "v"}


def test_a_legacy_pickle_checkpoint_is_read_without_mmap_and_still_safely(tmp_path):
    legacy = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4.0)}}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(read_pickle_checkpoint(legacy)["w"], torch.arange(4.0))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.ckpt", _use_new_zipfile_serialization=False)
    with pytest.raises(ModelFileError, match="run code"):
        read_pickle_checkpoint(tmp_path / "evil.ckpt")


@pytest.fixture
def nan_lora(tmp_path):
    path = our_lora(tmp_path / "nan.safetensors")
    with safe_open(str(path), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    key = next(k for k in tensors if k.endswith("lora_up.weight"))
    tensors[key][0, 0] = float("nan")
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("command", ["generate", "merge"])
def test_a_lora_holding_nan_is_refused_by_generate_and_merge(command, nan_lora, tmp_path):
    out = tmp_path / ("shots" if command == "generate" else "merged.safetensors")
    args = (["generate", "--model", "demo:sd15", "--lora", str(nan_lora), "--prompt", "x", "--steps", "1"]
            if command == "generate" else ["merge", "demo:sd15", str(nan_lora)])
    code, _, stderr = run_cli(*args, "--out", str(out))
    assert code == 2 and "NaN" in stderr and "nan.safetensors" in stderr, stderr
    assert not out.exists() or not any(out.iterdir())


def test_a_lora_holding_nan_is_refused_by_combine_export_and_init_from(nan_lora, tmp_path):
    from tests.support.engine import RecordingSink
    from trainer.export.exporter import export_adapter
    from trainer.lora.init_from import read_init_file
    from trainer.tryit.combine import combine_files
    from trainer.tryit.loras import LoraSpec

    good = our_lora(tmp_path / "good.safetensors")
    with pytest.raises(ModelFileError, match="NaN"):
        combine_files([LoraSpec(good), LoraSpec(nan_lora)], tmp_path / "c.safetensors")
    with pytest.raises(ModelFileError, match="NaN"):
        export_adapter(nan_lora, to=tmp_path / "ui")
    cfg = tiny_config(make_dataset(tmp_path / "data", count=1), lora__init_from=str(nan_lora))
    with pytest.raises(ModelFileError, match="NaN"):
        read_init_file(cfg, RecordingSink())
    assert not (tmp_path / "c.safetensors").exists() and not (tmp_path / "ui").exists()


def test_merge_loras_checks_the_family_of_each_file_even_when_two_share_a_name(tmp_path):
    from trainer.tryit.combine import combine_files
    from trainer.tryit.loras import LoraSpec

    sd1 = our_lora(tmp_path / "a" / "style.safetensors")
    xl = our_lora(tmp_path / "b" / "style.safetensors", config="tiny-sdxl", arch="sdxl")
    with pytest.raises(UserError, match="different models"):
        combine_files([LoraSpec(sd1), LoraSpec(xl)], tmp_path / "c.safetensors")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares WIDTH x HEIGHT: a few bytes on disk, never decoded."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_a_400_megapixel_png_is_left_out_of_training_and_named_by_dataset_check(tmp_path):
    from trainer.data.records import load_records

    data = make_dataset(tmp_path / "data", count=2)
    (data / "huge.png").write_bytes(_png_header_only(20_000, 20_000))
    unreadable: list = []
    records = load_records(tiny_config(data), unreadable)
    assert [p.name for p in unreadable] == ["huge.png"] and len(records) == 2
    proc = subprocess.run([sys.executable, "-m", "trainer", "dataset", "check", str(data), "--json"],
                          capture_output=True, text=True, cwd=REPO, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    unreadable = next(w for w in json.loads(proc.stdout)["warnings"] if w["kind"] == "unreadable")
    assert [Path(f).name for f in unreadable["files"]] == ["huge.png"]


def _zip_with_a_corrupt_member(path, good: bytes) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a_bad.png", good)
        zf.writestr("b_good.png", good + b"\0")  # another file: not a duplicate of the first
    raw = bytearray(path.read_bytes())
    start = raw.index(b"a_bad.png") + len("a_bad.png")
    raw[start + 40:start + 60] = bytes(20)  # inside a_bad.png's compressed data: its CRC fails
    path.write_bytes(bytes(raw))


def test_one_corrupt_zip_member_and_a_garbage_index_do_not_abandon_the_import(tmp_path):
    from tests.trainer.data.test_import import _png_bytes
    from trainer.data.importer import INDEX_FILE, import_sources

    archive = tmp_path / "photos.zip"
    _zip_with_a_corrupt_member(archive, _png_bytes())
    into = tmp_path / "ds"
    into.mkdir()
    (into / INDEX_FILE).write_text("[1, 2")  # a damaged index: rebuilt from the folder
    report = import_sources([archive], into)
    status = {e.source.split("!")[-1]: e.status for e in report.entries}
    assert status == {"a_bad.png": "refused", "b_good.png": "imported"}, report.entries
    assert len(json.loads((into / INDEX_FILE).read_text())) == 1
    (into / INDEX_FILE).write_text('["not", "a table"]')
    assert import_sources([archive], into).count("duplicate") == 1


def test_a_huge_caption_in_a_zip_is_not_imported_and_never_read_whole(tmp_path):
    from tests.trainer.data.test_import import _png_bytes
    from trainer.data.importer import import_sources

    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("img.png", _png_bytes())
        zf.writestr("img.txt", b"tag, " * 2_000_000)  # 10 MB, a few KB packed
    report = import_sources([archive], tmp_path / "ds")
    assert report.count("imported") == 1 and "caption is larger than" in report.entries[0].reason
    assert not list((tmp_path / "ds").glob("*.txt"))


def test_a_huge_caption_file_is_read_only_up_to_the_bound(tmp_path):
    from trainer.shared.captions import MAX_CAPTION_BYTES, read_caption

    (tmp_path / "big.txt").write_text("zkx, " + "é" * 3_000_000, encoding="utf-8")
    caption = read_caption(tmp_path / "big.txt")
    assert caption.text.startswith("zkx, é") and len(caption.text.encode()) <= MAX_CAPTION_BYTES
    assert "larger than" in caption.problem  # reported, and never rewritten by a caption edit


def test_dataset_check_reads_a_30_mb_caption_only_up_to_the_bound(tmp_path):
    from trainer.data.health import check_dataset

    data = make_dataset(tmp_path / "data", count=2)
    with open(data / "img_00.txt", "w", encoding="utf-8") as fh:
        fh.write("tok, " + "word " * 6_000_000)  # 30 MB: once tokenized whole, for a minute and gigabytes
    kinds = {w.kind: w.files for w in check_dataset(data).warnings}
    assert [Path(f).name for f in kinds["huge_caption"]] == ["img_00.txt"] and "long_caption" in kinds


@pytest.mark.parametrize("command", ["import", "export"])
def test_a_file_standing_where_a_folder_belongs_is_a_clear_error(command, tmp_path):
    from tests.trainer.data.test_import import _png_bytes

    blocker = tmp_path / "blocker"
    blocker.write_text("mine")
    if command == "import":
        (tmp_path / "a.png").write_bytes(_png_bytes())
        code, _, stderr = run_cli("dataset", "import", str(tmp_path / "a.png"), "--into", str(blocker))
    else:
        code, _, stderr = run_cli("export", str(our_lora(tmp_path / "x.safetensors")), "--to", str(blocker))
    assert code == 2 and "is a file" in stderr and "Traceback" not in stderr, stderr
    assert blocker.read_text() == "mine"

