"""`lora-studio dataset caption DIR --model FOLDER [--mode fill|append|overwrite] [--threshold 0.35] ...`:
auto-captioning from the command line, and for the GUI with `--events jsonl`.

With `--events jsonl` stdout carries only events (as for training: the real stdout is claimed first, so a
library's print cannot corrupt the stream): one `caption` event per image, then `caption_summary` and
`done`; a failure is an `error` event. `{"cmd": "stop"}` on stdin, SIGTERM or Ctrl+C stop between images
and every caption already written stays. Exit code: 0 unless nothing could be captioned because of an error
(2: the model, dataset or options are wrong; 1: every image failed, or a bug; 130: a second Ctrl+C).
"""

from __future__ import annotations

import sys
import time
import traceback

from trainer import events as ev
from trainer.control import Control
from trainer.errors import DatasetError, UserError

EXIT_BUG, EXIT_USER_ERROR, EXIT_INTERRUPTED = 1, 2, 130
EXIT_NOTHING_CAPTIONED = 1


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
    cap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                     help="where the model runs (auto: the GPU when there is one)")
    cap.add_argument("--events", choices=["jsonl", "none"], default="none",
                     help="jsonl: one JSON event per image on stdout, commands on stdin (the GUI)")


class Output:
    """JSON lines on the claimed stdout (--events jsonl), or readable lines for a person."""

    def __init__(self, jsonl: bool):
        self.stream = None
        if jsonl:
            from trainer.sink import claim_stdout_for_events

            self.stream = claim_stdout_for_events()

    def emit(self, event: ev.Event) -> None:
        if self.stream is not None:
            self.stream.write(event.encode() + "\n")
            self.stream.flush()
        elif isinstance(event, ev.Caption):
            detail = event.caption if event.status == "written" else f"skipped: {event.reason}"
            print(f"[{event.done}/{event.total}] {event.path}: {detail}", flush=True)
        elif isinstance(event, ev.Error):
            print(f"error: {event.message}" + (f"\n  hint: {event.hint}" if event.hint else ""),
                  file=sys.stderr, flush=True)


def cmd_autocaption(args) -> int:
    out = Output(args.events == "jsonl")
    control = Control()
    control.install_signal_handlers()
    if args.events == "jsonl":
        control.listen_stdin()
    try:
        return _caption_dataset(args, out, control)
    except UserError as exc:
        out.emit(ev.Error(exc.message, exc.hint, kind=type(exc).__name__))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        out.emit(ev.Error("interrupted", "every caption already written is kept", kind="interrupted"))
        return EXIT_INTERRUPTED
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        out.emit(ev.Error(f"{type(exc).__name__}: {exc}", "this is a bug in LoRA Studio; the log has the "
                                                          "details", kind="bug"))
        return EXIT_BUG


def _caption_dataset(args, out: Output, control: Control) -> int:
    from trainer.data.captioning import load_captioner
    from trainer.data.captioning.run import auto_caption
    from trainer.data.commands import dataset_images

    images = dataset_images(args.folder, args.only)
    if not images:
        raise DatasetError(f"{args.folder} holds no images to caption" + (" among --only" if args.only else ""),
                           "add images first: lora-studio dataset import SRC --into DIR")
    captioner = load_captioner(args.model, args.device, general_threshold=args.threshold,
                               character_threshold=args.character_threshold, exclude=args.exclude,
                               underscores_to_spaces=not args.keep_underscores)
    print(f"captioning {len(images)} images with {captioner.name} on {captioner.device} (mode {args.mode})",
          file=sys.stderr, flush=True)
    start, written, skipped, failures = time.monotonic(), 0, 0, []
    results = auto_caption(args.folder, images, captioner, args.mode, args.trigger or "", args.force,
                           lambda: control.stop_requested)
    for done, r in enumerate(results, start=1):
        written += r.status == "written"
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
