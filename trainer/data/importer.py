"""`lora-studio dataset import`: copy images (files, folders, .zip archives) into a dataset folder.

Originals are only ever read. Each file lands under a safe unique name with its `.txt` caption beside it,
or is refused with a reason a user can act on. Pixels are checked before decoding (decompression bombs),
then fully decoded (truncated files), normalised (EXIF orientation, transparency onto white, CMYK,
16-bit, palette, first frame of animations) and written as PNG, or copied byte for byte when the file is
already a plain RGB/grey JPEG, PNG or WebP.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trainer.data.normalize import NormalizeError, normalize_image
from trainer.shared.captions import MAX_CAPTION_BYTES
from trainer.shared.errors import DatasetError
from trainer.shared.fsutil import atomic_write_bytes
from trainer.shared.images import IMAGE_SUFFIXES, MAX_PIXELS
from trainer.shared.paths import contained_path

INDEX_FILE = ".lora-studio-import.json"
MAX_MEMBER_BYTES = 512 * 1024 * 1024
# what reading one file or archive member can raise: a bad CRC or stream, an encrypted or oddly compressed member
READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, ValueError)
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


@dataclass
class Entry:
    source: str
    status: str          # imported | duplicate | refused
    reason: str = ""
    dest: str = ""


@dataclass
class ImportReport:
    into: str
    entries: list[Entry] = field(default_factory=list)
    cancelled: bool = False

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.status == status)

    def to_json(self) -> str:
        return json.dumps({"into": self.into, "imported": self.count("imported"),
                           "duplicates": self.count("duplicate"), "refused": self.count("refused"),
                           "cancelled": self.cancelled, "files": [asdict(e) for e in self.entries]}, indent=2)


@dataclass
class Candidate:
    label: str                      # what the user sees: a path, or "archive.zip!member"
    read: Callable[[], bytes]
    caption: Callable[[], bytes] | None
    stem: str
    refusal: str = ""               # set when the entry is refused before reading (unsafe zip path, …)


def import_sources(sources: list[Path], into: Path, min_side: int = 256, max_pixels: int = MAX_PIXELS,
                   progress: Callable[[int, int], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> ImportReport:
    into = _target_folder(Path(into).expanduser())
    report = ImportReport(str(into))
    candidates = [c for src in sources for c in _candidates(Path(src).expanduser(), into)]
    known = _load_index(into)
    taken = {p.stem.lower() for p in into.iterdir()}
    try:
        for done, cand in enumerate(candidates):
            if cancel and cancel():
                report.cancelled = True
                break
            report.entries.append(_import_one(cand, into, min_side, max_pixels, known, taken))
            if progress:
                progress(done + 1, len(candidates))
    finally:  # what was imported stays known, whatever stopped the import
        _save_index(into, known)
    return report


def _target_folder(into: Path) -> Path:
    if into.exists() and not into.is_dir():
        raise DatasetError(f"--into {into} is a file, not a folder", "give the dataset folder to import into")
    try:
        into.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the dataset folder {into}: {exc.strerror or exc}",
                           "give a folder you can write to (no file may stand in place of one of its parents)") \
            from None
    return into


def _import_one(cand: Candidate, into: Path, min_side: int, max_pixels: int, known: dict, taken: set) -> Entry:
    if cand.refusal:
        return Entry(cand.label, "refused", cand.refusal)
    try:
        data = cand.read()
    except READ_ERRORS as exc:  # one damaged archive member is refused alone; the import goes on
        return Entry(cand.label, "refused", f"cannot read: {exc}")
    digest = hashlib.sha256(data).hexdigest()
    caption, note = _caption_of(cand)
    if digest in known:
        return Entry(cand.label, "duplicate", _merge_caption(caption, into / known[digest]) + note, known[digest])
    try:
        payload, suffix = normalize_image(data, min_side, max_pixels)
    except NormalizeError as exc:
        return Entry(cand.label, "refused", str(exc))
    name = contained_path(into, unique_name(safe_stem(cand.stem), taken), "the imported name").name
    dest = into / f"{name}{suffix}"
    atomic_write_bytes(dest, payload)
    if caption is not None:
        atomic_write_bytes(into / f"{name}.txt", caption)
    known[digest] = dest.name
    return Entry(cand.label, "imported", note.removeprefix("; "), dest.name)


def _caption_of(cand: Candidate) -> tuple[bytes | None, str]:
    """The candidate's caption, or None with the reason it was left out: unreadable, or past the caption
    bound (trainer.shared.captions), which is never read further."""
    if cand.caption is None:
        return None, ""
    try:
        caption = cand.caption()
    except READ_ERRORS as exc:
        return None, f"; its caption cannot be read ({exc}) and was not imported"
    if len(caption) > MAX_CAPTION_BYTES:
        return None, (f"; its caption is larger than {MAX_CAPTION_BYTES // 1024} KB (more than any token limit "
                      "uses) and was not imported")
    return caption, ""


def _merge_caption(caption: bytes | None, kept: Path) -> str:
    """A duplicate is not imported, but its caption must not be lost: it moves to the copy that was kept
    when that copy has none. Returns the report's reason, naming the kept file and what became of the caption."""
    reason = f"same content as {kept.name}, which was kept"
    if caption is None:
        return reason
    kept_caption = kept.with_suffix(".txt")
    if not kept_caption.exists():
        atomic_write_bytes(kept_caption, caption)
        return f"{reason}; this file's caption was copied to {kept_caption.name}"
    if read_limited(kept_caption.open("rb")).strip() == caption.strip():
        return f"{reason} with the same caption"
    return f"{reason} with its own caption ({kept_caption.name}); this file's differing caption was not used"


def _candidates(src: Path, into: Path) -> Iterator[Candidate]:
    if not src.exists():
        yield Candidate(str(src), _nothing, None, src.stem, refusal="not found")
    elif src.is_dir():
        yield from _folder_candidates(src, into)
    elif src.suffix.lower() == ".zip":
        yield from _zip_candidates(src)
    elif src.suffix.lower() != ".txt":
        yield _file_candidate(src)


def _nothing() -> bytes:
    return b""


def _file_candidate(path: Path) -> Candidate:
    caption = path.with_suffix(".txt")
    return Candidate(str(path), path.read_bytes,
                     (lambda: read_limited(caption.open("rb"))) if caption.is_file() else None, path.stem,
                     refusal="" if path.suffix.lower() in IMAGE_SUFFIXES else "not an image file")


def read_limited(fh) -> bytes:
    """At most one byte past the caption bound: enough to tell that a caption is too long, never more."""
    with fh:
        return fh.read(MAX_CAPTION_BYTES + 1)


def _folder_candidates(folder: Path, into: Path) -> Iterator[Candidate]:
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).parts
        if not path.is_file() or any(p.startswith(".") for p in rel) or path.suffix.lower() == ".txt":
            continue
        if into.resolve() in path.resolve().parents:
            continue  # importing a folder that contains the dataset: don't re-import our own output
        yield from _zip_candidates(path) if path.suffix.lower() == ".zip" else [_file_candidate(path)]


def _zip_candidates(archive: Path) -> Iterator[Candidate]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        yield Candidate(str(archive), _nothing, None, archive.stem, refusal=f"not a readable zip: {exc}")
        return
    names = {i.filename for i in zf.infolist()}
    for info in zf.infolist():
        if info.is_dir() or info.filename.lower().endswith(".txt"):
            continue
        label = f"{archive}!{info.filename}"
        stem = Path(info.filename.replace("\\", "/")).stem
        problem = zip_entry_problem(info)
        caption_name = str(Path(info.filename).with_suffix(".txt"))
        caption = (lambda n=caption_name: read_limited(zf.open(n))) if caption_name in names and not problem \
            else None
        if not problem and Path(info.filename).suffix.lower() not in IMAGE_SUFFIXES:
            problem = "not an image file"
        yield Candidate(label, lambda i=info: zf.read(i), caption, stem, refusal=problem)


def zip_entry_problem(info: zipfile.ZipInfo) -> str:
    """Why an archive entry must not be extracted, or "" if it is safe."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "unsafe path in archive (absolute)"
    if ".." in name.split("/"):
        return "unsafe path in archive (leads outside the folder with '..')"
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        return "symbolic link in archive"
    if info.file_size > MAX_MEMBER_BYTES:
        return f"too large ({info.file_size:,} bytes unpacked)"
    return ""


def safe_stem(stem: str) -> str:
    cleaned = re.sub(r"[^\w\-. ]+", "_", stem, flags=re.UNICODE).strip(" ._")[:100] or "image"
    return f"{cleaned}_" if cleaned.lower() in RESERVED else cleaned


def unique_name(stem: str, taken: set) -> str:
    name, n = stem, 1
    while name.lower() in taken:
        name, n = f"{stem}-{n}", n + 1
    taken.add(name.lower())
    return name


def _load_index(into: Path) -> dict[str, str]:
    """sha256 of each imported source -> its file name; files already in the folder count too. The index only
    saves hashing: a damaged one is rebuilt from the folder, and names only files that are there."""
    known = _read_index(into / INDEX_FILE)
    present = {p.name for p in into.iterdir()}
    known = {h: n for h, n in known.items() if isinstance(h, str) and isinstance(n, str) and n in present}
    listed = set(known.values())
    for path in into.iterdir():
        if path.suffix.lower() in IMAGE_SUFFIXES and path.name not in listed:
            known[hashlib.sha256(path.read_bytes()).hexdigest()] = path.name
    return known


def _read_index(path: Path) -> dict:
    try:
        known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return known if isinstance(known, dict) else {}


def _save_index(into: Path, known: dict[str, str]) -> None:
    atomic_write_bytes(into / INDEX_FILE, json.dumps(known, indent=0, sort_keys=True).encode())

