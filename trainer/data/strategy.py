"""Caption strategies for the two kinds of LoRA the wizard trains, and `dataset prepare-captions`.

- character (person, object): the trigger word (and a class word like "woman" or "mug") goes first; the tags
  in at least half the captions that describe the subject itself (hair colour, eye colour, a logo) are
  pruned, so the LoRA binds those features to the trigger instead of to the tags. Tags for what can vary
  (pose, place, clothing, expression, framing) stay even when common, so the user can still prompt for it.
- style: captions describe the content; the words that name the style itself ("watercolor",
  "oil painting") are pruned so the look goes into the LoRA; the trigger word goes first.

The plan is computed first (a dry run the wizard shows as before/after), then applied atomically per file.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from trainer.data.captions import caption_path, join_tags, read_caption, split_tags
from trainer.shared.fsutil import atomic_write_text

# Tags seen in at least this share of captions describe the subject itself, not one picture of it...
CHARACTER_PRUNE_SHARE = 0.5
# ...unless they say how it is shown: pose, place, clothing, expression, framing. Those can be common in a
# dataset (half the photos indoors, most of them smiling) yet are what a user changes at prompt time; pruned,
# they would be baked into the trigger word. A tag is kept when one of its words is here.
VARYING_WORDS = frozenset("""
    sitting standing lying kneeling squatting crouching walking running jumping leaning bending pose posing
    looking arms arm hand hands legs crossed raised holding from behind side above below profile back
    indoors outdoors background room bedroom kitchen office street city forest beach park garden sky night
    day sunset sunrise water snow rain tree trees building window bed chair sofa couch table studio stage
    shirt dress skirt jacket coat hoodie sweater pants shorts jeans trousers shoes boots socks thighhighs
    hat cap gloves scarf uniform suit tie necktie swimsuit bikini kimono apron armor costume clothes outfit
    wearing glasses sunglasses necklace earrings bag
    smile smiling grin laughing open closed blush crying tears frown angry sad happy surprised
    expressionless wink tongue teeth serious
    body portrait close-up closeup shot cowboy view
""".split())
STYLE_WORDS = ("style", "art", "painting", "drawing", "sketch", "illustration", "watercolor", "watercolour",
               "oil", "ink", "pencil", "anime", "manga", "cartoon", "comic", "lineart", "pixel", "render",
               "3d", "photo", "realistic", "traditional media", "digital", "brush", "pastel", "monochrome")


@dataclass
class CaptionChange:
    image: str
    before: str
    after: str
    problem: str = ""


def _images(folder: Path) -> list[Path]:
    from trainer.data.spec import list_images, read_dataset

    return [r.path for r in list_images(read_dataset(folder))]


def suggest_prune(images: list[Path], kind: str, keep: tuple[str, ...] = ()) -> list[str]:
    """Tags worth removing under the kind's strategy, most frequent first."""
    counts = Counter(t.lower() for image in images for t in split_tags(read_caption(caption_path(image)).text))
    skip = {k.lower() for k in keep if k}
    if kind == "character":
        limit = max(2, CHARACTER_PRUNE_SHARE * len(images))
        return [t for t, n in counts.most_common() if n >= limit and t not in skip and not _varies(t)]
    return [t for t, _n in counts.most_common() if t not in skip and _names_a_style(t)]


def _varies(tag: str) -> bool:
    return any(w in VARYING_WORDS for w in tag.replace("_", " ").split())


def _names_a_style(tag: str) -> bool:
    words = tag.replace("_", " ").split()
    return any(w in STYLE_WORDS for w in words) or any(s in tag for s in STYLE_WORDS if " " in s)


def new_caption(tags: list[str], trigger: str, class_word: str, prune: set[str]) -> list[str]:
    lead = [w for w in (trigger, class_word) if w]
    drop = prune | {w.lower() for w in lead}
    return lead + [t for t in tags if t.lower() not in drop]


def plan_captions(images: list[Path], trigger: str, class_word: str = "",
                  prune: tuple[str, ...] = ()) -> list[CaptionChange]:
    prune_set = {p.lower() for p in prune}
    changes = []
    for image in images:
        caption = read_caption(caption_path(image))
        if caption.problem:
            changes.append(CaptionChange(str(image), "", "", caption.problem))
            continue
        after = join_tags(new_caption(split_tags(caption.text), trigger, class_word, prune_set))
        changes.append(CaptionChange(str(image), caption.text, after))
    return changes


def apply_changes(changes: list[CaptionChange]) -> int:
    written = 0
    for change in changes:
        if not change.problem and change.after != change.before:
            atomic_write_text(caption_path(Path(change.image)), change.after + "\n")
            written += 1
    return written


def register(dsub) -> None:
    p = dsub.add_parser("prepare-captions",
                        help="the wizard's caption strategy: trigger (and class) word first, prune tags")
    p.add_argument("folder", type=Path)
    p.add_argument("--kind", choices=["character", "style"], required=True)
    p.add_argument("--trigger", default="", help="the trigger word, put first in every caption")
    p.add_argument("--class-word", default="", help="characters: what the subject is (woman, dog, mug)")
    p.add_argument("--prune", action="append", default=None, metavar="TAG",
                   help="remove this tag (repeatable); default: the suggested tags")
    p.add_argument("--apply", action="store_true", help="write the captions (default: only show them)")
    p.add_argument("--json", action="store_true")


def cmd_prepare_captions(args) -> int:
    images = _images(args.folder)
    suggested = suggest_prune(images, args.kind, (args.trigger, args.class_word))
    prune = tuple(args.prune) if args.prune is not None else tuple(suggested)
    changes = plan_captions(images, args.trigger, args.class_word, prune)
    written = apply_changes(changes) if args.apply else 0
    if args.json:
        print(json.dumps({"suggested_prune": suggested, "pruned": list(prune), "applied": args.apply,
                          "written": written, "changes": [asdict(c) for c in changes]}, ensure_ascii=False))
        return 0
    for change in changes:
        name = Path(change.image).name
        print(f"{name}: {change.problem}" if change.problem else f"{name}: {change.before!r} -> {change.after!r}")
    print(f"pruned: {', '.join(prune) or 'nothing'}; "
          + (f"{written} captions written" if args.apply else "dry run: add --apply to write"), file=sys.stderr)
    return 0
