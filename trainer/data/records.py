"""The images a run trains on, read before anything heavy is imported, so that a missing or empty dataset
is reported at once. Torch-free."""

from __future__ import annotations

from pathlib import Path

from trainer.data.captions import caption_path, split_tags
from trainer.data.spec import list_images, read_dataset
from trainer.shared.captions import MAX_CAPTION_BYTES
from trainer.shared.config import SamplingConfig, TrainConfig
from trainer.shared.errors import DatasetError, some_files
from trainer.shared.images import MAX_PIXELS


def load_records(cfg: TrainConfig, unreadable: list | None = None) -> list:
    """The dataset's readable images; plain and kohya folders take their caption options from the config.
    Images that cannot be read are left out, and added to UNREADABLE when given (for a warning)."""
    root = Path(cfg.dataset.path).expanduser()  # "~/..." in a config file is the user's home
    subsets = read_dataset(root)
    if not (root / "dataset.toml").exists():
        d = cfg.dataset
        for s in subsets:
            s.caption_extension, s.keep_tokens, s.shuffle_tags = d.caption_extension, d.keep_tokens, d.shuffle_tags
            s.caption_dropout, s.tag_dropout = d.caption_dropout, d.tag_dropout
    found = list_images(subsets)
    records = [r for r in found if r.width]
    if unreadable is not None:
        unreadable.extend(r.path for r in found if not r.width)
    if not records:
        raise DatasetError(f"dataset folder {root} holds no readable images",
                           "add .jpg/.png/.webp images (with optional same-named .txt captions)")
    return records


def unreadable_images_warning(paths: list):
    """A Warning event naming the images training leaves out because they cannot be read, or None."""
    if not paths:
        return None
    from trainer.shared import events as ev

    return ev.Warning(message=f"{len(paths)} image(s) cannot be read and are left out: {some_files(paths)}",
                      hint="re-save or replace them (a broken download, an unsupported format, or more than "
                           f"{MAX_PIXELS / 1e6:.0f} megapixels); `dataset check` lists them all")


def unreadable_captions_warning(records: list):
    """A Warning event naming the caption files not read whole: not UTF-8 (trained as empty captions) or
    past the size bound (trained on their beginning); None when every caption was read."""
    bad = [(caption_path(r.path, r.subset.caption_extension), r) for r in records if r.caption_problem]
    if not bad:
        return None
    from trainer.shared import events as ev

    empty = [path for path, r in bad if not r.caption]
    cut = [path for path, r in bad if r.caption]
    parts = [f"{len(empty)} caption file(s) are not UTF-8 and are trained as empty captions: {some_files(empty)}"
             if empty else "",
             f"{len(cut)} caption file(s) are larger than {MAX_CAPTION_BYTES // 1024} KB and only their beginning "
             f"is read: {some_files(cut)}" if cut else ""]
    return ev.Warning(message="; ".join(p for p in parts if p),
                      hint="re-save them as UTF-8 (most editors offer this) and shorten them; the files were "
                           "not changed")


def caption_trigger(records: list) -> str:
    """The tag every training caption starts with (what `dataset prepare-captions --trigger` and
    `dataset caption --trigger` write), or "" when the captions do not agree on one."""
    firsts = {(split_tags(r.caption) or [""])[0] for r in records if not r.subset.is_reg}
    return firsts.pop() if len(firsts) == 1 and len(records) > 1 else ""


def adopt_caption_trigger(cfg: TrainConfig, records: list) -> str:
    """A config written by hand often leaves saving.trigger_phrase empty although the captions lead with a
    trigger word; without it the adapter's card has no activation text and the previews never use the
    word. Take it from the captions then. Returns what was done, for a warning, or ""."""
    trigger = "" if cfg.saving.trigger_phrase else caption_trigger(records)
    if not trigger:
        return ""
    cfg.saving.trigger_phrase = trigger
    done = f"saving.trigger_phrase is empty; using '{trigger}', which starts every caption"
    if cfg.sampling.prompts == SamplingConfig().prompts:
        cfg.sampling.prompts = [f"{trigger}, {p}" for p in cfg.sampling.prompts]
        done += f", and previews prompt '{cfg.sampling.prompts[0]}'"
    return done
