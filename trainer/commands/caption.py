"""`lora-studio dataset caption DIR --model FOLDER [--mode fill|append|overwrite] [--threshold 0.35]
[--prompt TEXT] [--max-tokens N] ...`: auto-captioning from the command line, and for the GUI with
`--events jsonl`. `--preview` captions the images (`--only`, else the first) and writes nothing.

With `--events jsonl` stdout carries only events (as for training: the real stdout is claimed first, so a
library's print cannot corrupt the stream): one `caption` event per image, then `caption_summary` and
`done`; a failure is an `error` event. `{"cmd": "stop"}` on stdin, SIGTERM or Ctrl+C stop between images
(between batches of --batch-size images) and every caption already written stays. Errors, stop handling and
the event stream are `train`'s own (trainer.commands.outcome.guarded, trainer.run.sink.EventSink). Exit code: 0 unless nothing could be captioned because of an error
(2: the model, dataset or options are wrong; 1: every image failed, or a bug; 130: a second Ctrl+C).
"""

from __future__ import annotations

import sys
import time

from trainer.run.control import Control
from trainer.run.sink import EventSink
from trainer.shared import events as ev
from trainer.shared.errors import DatasetError, UserError

EXIT_NOTHING_CAPTIONED = 1


def add_arguments(cap) -> None:
    cap.add_argument("--model", help="auto-caption with the model in this folder (WD14 ONNX tagger, a "
                                     "transformers image-to-text model, or a vision-language model: "
                                     "Florence-2, Qwen2/2.5-VL, LLaVA/JoyCaption); --trigger is then put first")
    cap.add_argument("--mode", choices=["fill", "append", "overwrite"], default="fill",
                     help="fill: only images without a caption (default); append; overwrite")
    cap.add_argument("--threshold", type=float, default=0.35, help="tagger: general tag threshold")
    cap.add_argument("--character-threshold", type=float, default=0.85, help="tagger: character threshold")
    cap.add_argument("--exclude", default="", help="tagger: comma-separated tags never written")
    cap.add_argument("--keep-underscores", action="store_true", help="tagger: keep booru underscores")
    vlm = cap.add_argument_group("vision-language models (Florence-2, Qwen2/2.5-VL, LLaVA)")
    vlm.add_argument("--prompt", help="what to ask the model (Florence-2: a task token such as "
                                      "<MORE_DETAILED_CAPTION>); default: the model's prompt for --length")
    vlm.add_argument("--length", choices=["short", "paragraph", "long"], default="paragraph",
                     help="the default prompt and token cap: one sentence, a paragraph (default), or detailed")
    vlm.add_argument("--max-tokens", type=int, help="most tokens a caption may have (default: by --length)")
    vlm.add_argument("--quantize", choices=["none", "8bit", "4bit"], default="none",
                     help="load the model in 8 or 4 bits (a CUDA GPU and bitsandbytes) to fit less memory")
    vlm.add_argument("--batch-size", type=int, help="images per model call (default: 4 on a GPU, 1 on a CPU)")
    post = cap.add_argument_group("post-processing (every back end)")
    post.add_argument("--tags-model", help="also run this WD14 tagger folder: captions become 'tags, sentence'")
    post.add_argument("--keep-openings", action="store_true",
                      help="keep openings such as 'The image shows' (stripped by default)")
    post.add_argument("--clip-limit", choices=["warn", "trim", "off"], default="warn",
                      help="captions past CLIP's 75 tokens: warn (default), trim to whole sentences, or off")
    cap.add_argument("--preview", action="store_true",
                     help="caption --only (else the first image) and print it; nothing is written")
    cap.add_argument("--force", action="store_true", help="also replace captions you edited by hand")
    cap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                     help="where the model runs (auto: the GPU when there is one)")
    cap.add_argument("--events", choices=["jsonl", "none"], default="none",
                     help="jsonl: one JSON event per image on stdout, commands on stdin (the GUI)")


def cmd_autocaption(args) -> int:
    from trainer.commands.outcome import guarded

    return guarded(args, lambda sink, control: _caption_dataset(args, sink, control),
                   "every caption already written is kept")


def _load(args):
    """The captioner, and the tagger whose tags go before its sentences (--tags-model), or None."""
    from trainer.data.captioning import TAGGER, detect, load_captioner

    for name in ("max_tokens", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be 1 or more, not {getattr(args, name)}",
                            "leave it out for the default")
    tag_options = dict(general_threshold=args.threshold, character_threshold=args.character_threshold,
                       exclude=args.exclude, underscores_to_spaces=not args.keep_underscores)
    tagger = None
    if args.tags_model:
        if detect(args.tags_model) != TAGGER:
            raise UserError(f"--tags-model {args.tags_model} is not a WD14-style tagger folder",
                            "point it at a folder holding model.onnx + selected_tags.csv")
        tagger = load_captioner(args.tags_model, args.device, **tag_options)
    captioner = load_captioner(args.model, args.device, **tag_options, prompt=args.prompt or "",
                               length=args.length, max_new_tokens=args.max_tokens, quantize=args.quantize,
                               batch_size=args.batch_size)
    return captioner, tagger


def _caption_dataset(args, out: EventSink, control: Control) -> int:
    from trainer.data.captioning.finish import Finish
    from trainer.data.captioning.run import auto_caption
    from trainer.data.spec import dataset_images

    images = dataset_images(args.folder, args.only)
    if not images:
        raise DatasetError(f"{args.folder} holds no images to caption" + (" among --only" if args.only else ""),
                           "add images first: lora-studio dataset import SRC --into DIR")
    if args.preview and not args.only:
        images = images[:1]
    finish = Finish(strip_openings=not args.keep_openings, clip_limit=args.clip_limit)
    captioner, tagger = _load(args)
    what = "previewing" if args.preview else "captioning"
    print(f"{what} {len(images)} images with {captioner.name} on {captioner.device} (mode {args.mode})",
          file=sys.stderr, flush=True)
    start, written, skipped, failures = time.monotonic(), 0, 0, []
    results = auto_caption(args.folder, images, captioner, args.mode, args.trigger or "", args.force,
                           lambda: control.stop_requested, finish, tagger, args.preview)
    for done, r in enumerate(results, start=1):
        written += r.status in ("written", "preview")
        skipped += r.status == "skipped"
        failures += [f"{r.path.name}: {r.reason}"] if r.failed else []
        out.emit(ev.Caption(str(r.path), r.caption, r.status, r.reason, done, len(images)))
    stopped = control.stop_requested
    print(f"{written} captioned, {skipped} skipped{' (stopped)' if stopped else ''} in "
          f"{time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
    out.emit(ev.CaptionSummary(written, skipped, stopped))
    code = 0
    if not written and failures and not stopped:  # nothing came out, and not by the user's choice
        out.emit(ev.Error(f"none of the {len(images)} images could be captioned; first: {failures[0]}",
                          "fix or remove the files it names (lora-studio dataset check DIR lists them)",
                          kind="nothing-captioned"))
        code = EXIT_NOTHING_CAPTIONED
    out.emit(ev.Done(adapter="", stopped_early=stopped))
    return code
