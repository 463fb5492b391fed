"""`lora-studio dataset check`: what a user wants to know before training, each warning naming its files.

Counts per subset, resolutions, too-small images, near-duplicates (difference hash), missing and
unreadable captions, captions past dataset.max_token_length (225) tokens, tag frequency, the bucket plan and steps per epoch.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from trainer.data.captions import caption_path, split_tags
from trainer.data.masks import mask_source, unreadable_masks
from trainer.data.spec import ImageRecord, list_images, read_dataset
from trainer.shared.buckets import bucket_plan
from trainer.shared.captions import MAX_CAPTION_BYTES
from trainer.shared.config import TrainConfig
from trainer.shared.steps import batches_per_epoch

CLIP_TOKENS = 75  # one CLIP chunk; captioners trim to it (captioning.finish)
NEAR_DUPLICATE_BITS = 6  # of 64: dHashes this close are the same picture, resized or re-encoded


@dataclass
class Warning:
    kind: str
    message: str
    files: list[str] = field(default_factory=list)


@dataclass
class HealthReport:
    root: str
    arch: str
    images: int
    subsets: dict[str, dict]
    resolutions: dict[str, int]
    tag_frequency: dict[str, int]
    bucket_plan: dict
    steps_per_epoch: int
    warnings: list[Warning] = field(default_factory=list)
    masks: dict[str, int] = field(default_factory=dict)  # loss.masked: images by mask source

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def to_text(self) -> str:
        lines = [f"{self.root}: {self.images} images, {self.steps_per_epoch} steps per epoch ({self.arch})"]
        for name, info in self.subsets.items():
            lines.append(f"  subset {name}: {info['images']} images x {info['repeats']} repeats"
                         + (" (regularisation)" if info["is_reg"] else ""))
        lines.append("  buckets: " + ", ".join(f"{k}: {v}" for k, v in self.bucket_plan["buckets"].items()))
        top = ", ".join(f"{t} ({n})" for t, n in list(self.tag_frequency.items())[:12])
        lines.append(f"  top tags: {top or '(no captions)'}")
        if self.masks.get("masks folder") or self.masks.get("alpha"):
            lines.append(f"  loss masks (loss.masked): {self.masks.get('masks folder', 0)} from masks/, "
                         f"{self.masks.get('alpha', 0)} from the alpha channel, {self.masks.get('', 0)} without")
        for w in self.warnings:
            lines.append(f"  ! {w.message}")
            lines.extend(f"      {f}" for f in w.files[:10])
            if len(w.files) > 10:
                lines.append(f"      … and {len(w.files) - 10} more")
        return "\n".join(lines)


def check_dataset(root: Path, arch: str = "sd1", batch_size: int = 1, min_side: int = 256,
                  max_tokens: int | None = None, repeats: int = 1, resolution: int | None = None) -> HealthReport:
    """`arch`: the family (its id, or a preset name such as sd15) whose buckets and tokenizer apply;
    `resolution`: the model's native resolution when it is not the family's (an SD2 512-base);
    `max_tokens`: dataset.max_token_length (default: the family's); `repeats`: dataset.repeats, on top of each
    subset's own."""
    from trainer.families.registry import find

    family = find(arch)
    records = list_images(read_dataset(root))
    base = resolution or family.native_resolution()
    max_tokens = max_tokens or family.tokens.default
    readable = [r for r in records if r.width]
    plan = bucket_plan([(r.width, r.height) for r in readable], base)
    counting = TrainConfig()  # the engine's own step count (trainer.shared.steps), at this arch's resolution
    counting.dataset.resolution, counting.dataset.repeats, counting.schedule.batch_size = base, repeats, batch_size
    report = HealthReport(
        root=str(root), arch=family.id, images=len(records), subsets=_subsets(records),
        resolutions=dict(Counter(f"{r.width}x{r.height}" for r in records).most_common(20)),
        tag_frequency=dict(Counter(t for r in records for t in split_tags(r.caption)).most_common(100)),
        bucket_plan=plan.to_dict(), steps_per_epoch=batches_per_epoch(readable, counting))
    report.warnings = _warnings(records, min_side, base, plan.upscaled, max_tokens, family)
    sources = {r.path: mask_source(r) for r in records if r.width}
    report.masks = dict(Counter(sources.values()))
    unmasked = [str(p) for p, source in sources.items() if not source]
    if unmasked and len(unmasked) < len(sources):
        report.warnings.append(Warning("no_mask", f"{len(unmasked)} images have no loss mask (masks/ folder or "
                                                  "alpha channel): with loss.masked they train whole", unmasked))
    broken = unreadable_masks(records)
    if broken:
        report.warnings.append(Warning("unreadable_mask", f"{len(broken)} loss masks are not readable images: "
                                       "with loss.masked, training refuses to start until they are replaced or "
                                       "deleted", [str(path) for path, _ in broken]))
    return report


def _subsets(records: list[ImageRecord]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in records:
        info = out.setdefault(r.subset.name, {"images": 0, "repeats": r.subset.repeats, "is_reg": r.subset.is_reg})
        info["images"] += 1
    return out


def _warnings(records: list[ImageRecord], min_side: int, base: int, upscaled: int,
              max_tokens: int, family) -> list[Warning]:
    found = []

    def add(kind: str, message: str, files: list) -> None:
        if files:
            found.append(Warning(kind, message.format(n=len(files)), [str(f) for f in files]))

    if not records:
        found.append(Warning("empty", "the dataset has no images: add some (drop them here, or dataset import)"))
    add("unreadable", "{n} images cannot be read", [r.path for r in records if not r.width])
    add("too_small", f"{{n}} images are smaller than {min_side} px on their shorter side",
        [r.path for r in records if r.width and min(r.width, r.height) < min_side])
    add("below_base", f"{{n}} images are smaller than the {base}px training area (they train at lower "
        "resolution)", [r.path for r in records if r.width and r.width * r.height < base * base // 2])
    add("no_caption", "{n} images have no caption (.txt)", [r.path for r in records if not r.caption
                                                             and not r.caption_problem])
    add("bad_caption", "{n} caption files are not UTF-8 and will be ignored",
        [caption_path(r.path, r.subset.caption_extension) for r in records if r.caption_problem and not r.caption])
    add("huge_caption", f"{{n}} caption files are larger than {MAX_CAPTION_BYTES // 1024} KB: only their beginning "
        "is read", [caption_path(r.path, r.subset.caption_extension) for r in records
                    if r.caption_problem and r.caption])
    add("long_caption", f"{{n}} captions are longer than {max_tokens} tokens of {family.label}'s text encoder "
        "(dataset.max_token_length; the rest is cut off)", _long_captions(records, max_tokens, family))
    add("near_duplicate", "{n} images look like another image in the dataset", _near_duplicates(records))
    return found


def _long_captions(records: list[ImageRecord], max_tokens: int, family) -> list[Path]:
    captioned = [r for r in records if r.caption]
    if not captioned:
        return []
    tokenizer = family.caption_tokenizer()
    lengths = tokenizer([r.caption for r in captioned], add_special_tokens=False).input_ids
    return [r.path for r, ids in zip(captioned, lengths) if len(ids) > max_tokens]


def dhash(path: Path) -> int:
    with Image.open(path) as im:
        im.draft("L", (64, 64))  # JPEG decodes at reduced size: fast on big photos
        small = np.asarray(im.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _near_duplicates(records: list[ImageRecord]) -> list[Path]:
    hashes = []
    for r in records:
        if r.width:
            try:
                hashes.append((r.path, dhash(r.path)))
            except OSError:
                continue
    flagged = []
    for i, (path, h) in enumerate(hashes):
        if any(bin(h ^ other).count("1") <= NEAR_DUPLICATE_BITS for _, other in hashes[:i]):
            flagged.append(path)
    return flagged
