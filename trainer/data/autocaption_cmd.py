"""`lora-studio dataset caption DIR --model FOLDER [--mode fill|append|overwrite] [--threshold 0.35] ...`:
auto-captioning from the command line, and for the GUI with `--events jsonl` (one `caption` event per
image, `{"cmd": "stop"}` on stdin stops between images; every caption already written stays)."""

from __future__ import annotations

import sys
import time

from trainer import events as ev
from trainer.control import Control
from trainer.errors import UserError

EXIT_USER_ERROR = 2


def add_arguments(cap) -> None:
    cap.add_argument("--model", help="auto-caption with the model in this folder (WD14 ONNX tagger or a "
                                     "transformers image-to-text model); --trigger is then put first")
    cap.add_argument("--mode", choices=["fill", "append", "overwrite"], default="fill",
                     help="fill: only images without a caption (default); append; overwrite")
    cap.add_argument("--threshold", type=float, default=0.35, help="tagger: general tag threshold")
    cap.add_argument("--character-threshold", type=float, default=0.85, help="tagger: character threshold")
    cap.add_argument("--exclude", default="", help="tagger: comma-separated tags never written")
    cap.add_argument("--keep-underscores", action="store_true", help="tagger: keep booru underscores")
    cap.add_argument("--force", action="store_true", help="also replace captions you edited by hand")
    cap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    cap.add_argument("--events", choices=["jsonl", "none"], default="none",
                     help="jsonl: one JSON event per image on stdout, commands on stdin (the GUI)")


def cmd_autocaption(args, images: list) -> int:
    from trainer.data.autocaption import auto_caption
    from trainer.data.captioners import TaggerOptions, load_captioner

    jsonl = args.events == "jsonl"
    control = Control()
    control.install_signal_handlers()
    if jsonl:
        control.listen_stdin()
    options = TaggerOptions(args.threshold, args.character_threshold,
                            [t for t in args.exclude.split(",") if t.strip()], not args.keep_underscores)
    try:
        captioner = load_captioner(args.model, args.device, options)
    except UserError as exc:
        return _fail(exc, jsonl)
    written = skipped = 0
    start = time.monotonic()
    for done, result in enumerate(auto_caption(args.folder, images, captioner, args.mode, args.trigger or "",
                                               args.force, lambda: control.stop_requested), start=1):
        written += result.status == "written"
        skipped += result.status == "skipped"
        _report(ev.Caption(str(result.path), result.caption, result.status, result.reason, done, len(images)),
                jsonl)
    stopped = control.stop_requested
    summary = ev.CaptionSummary(written, skipped, stopped)
    if jsonl:
        print(summary.encode(), flush=True)
    print(f"{written} captioned, {skipped} skipped{' (stopped)' if stopped else ''} in "
          f"{time.monotonic() - start:.1f} s with {captioner.name}", file=sys.stderr)
    return 0


def _report(event: ev.Caption, jsonl: bool) -> None:
    if jsonl:
        print(event.encode(), flush=True)
        return
    detail = event.caption if event.status == "written" else f"skipped: {event.reason}"
    print(f"[{event.done}/{event.total}] {event.path}: {detail}", flush=True)


def _fail(exc: UserError, jsonl: bool) -> int:
    if jsonl:
        print(ev.Error(exc.message, exc.hint, kind="captioner").encode(), flush=True)
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_USER_ERROR
