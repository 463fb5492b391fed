"""`lora-studio dataset import | check | caption`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainer.commands.outcome import EXIT_OK, EXIT_USER_ERROR, one_shot


def register(sub) -> None:
    d = sub.add_parser("dataset", help="import images, check a dataset, edit captions")
    dsub = d.add_subparsers(dest="dataset_command", required=True)
    imp = dsub.add_parser("import", help="copy images, folders and .zip archives into a dataset folder")
    imp.add_argument("sources", nargs="+", type=Path)
    imp.add_argument("--into", type=Path, required=True)
    imp.add_argument("--min-side", type=int, default=256)
    imp.add_argument("--json", action="store_true")
    imp.add_argument("--progress", action="store_true", help='print {"done": N, "total": M} lines on stderr')
    chk = dsub.add_parser("check", help="health report before training")
    chk.add_argument("folder", type=Path)
    chk.add_argument("--arch", default="sd1", help="model family whose buckets and tokenizer apply: sd1 (or "
                                                   "sd15), sd2, sdxl, ... (`lora-studio system` lists them)")
    chk.add_argument("--resolution", type=int, help="the model's native resolution, when not its family's "
                                                    "(e.g. 512 for an SD2 512-base)")
    chk.add_argument("--max-tokens", type=int, help="dataset.max_token_length (default: the family's)")
    chk.add_argument("--batch-size", type=int, default=1)
    chk.add_argument("--repeats", type=int, default=1, help="dataset.repeats: every image this many times "
                                                             "per epoch, on top of N_name folder repeats")
    chk.add_argument("--json", action="store_true")
    cap = dsub.add_parser("caption", help="edit captions across the dataset")
    cap.add_argument("folder", type=Path)
    cap.add_argument("--only", nargs="+", type=Path, help="edit only these images (default: all)")
    cap.add_argument("--trigger", help="put this trigger word first in every caption")
    cap.add_argument("--add", help="add a tag")
    cap.add_argument("--position", choices=["start", "end"], default="end")
    cap.add_argument("--remove", help="remove a tag")
    cap.add_argument("--replace-tag", nargs=2, metavar=("OLD", "NEW"))
    cap.add_argument("--find", help="find text (with --replace-with)")
    cap.add_argument("--replace-with", default="")
    cap.add_argument("--regex", action="store_true", help="--find is a regular expression")
    cap.add_argument("--frequency", action="store_true", help="print tag frequency")
    cap.add_argument("--json", action="store_true")
    from trainer.commands.caption import add_arguments as add_autocaption_arguments

    add_autocaption_arguments(cap)
    from trainer.data.strategy import register as register_strategy

    register_strategy(dsub)


def cmd_dataset(args) -> int:
    from trainer.data.strategy import cmd_prepare_captions

    if args.dataset_command == "caption" and args.model:  # streams events: its errors are events too
        from trainer.commands.caption import cmd_autocaption

        return cmd_autocaption(args)
    handler = {"import": _import, "check": _check, "caption": _caption,
               "prepare-captions": cmd_prepare_captions}[args.dataset_command]
    return one_shot(handler)(args)  # a user error is `error: …` and exit code 2, as for every command


def _import(args) -> int:
    from trainer.data.importer import import_sources

    def progress(done: int, total: int) -> None:
        print(json.dumps({"done": done, "total": total}), file=sys.stderr, flush=True)

    report = import_sources(args.sources, args.into, min_side=args.min_side,
                            progress=progress if args.progress else None)
    if args.json:
        print(report.to_json())
    else:
        for e in report.entries:
            detail = f" -> {e.dest}" if e.status == "imported" else f": {e.reason}"
            print(f"{e.status:9} {e.source}{detail}")
        print(f"{report.count('imported')} imported, {report.count('duplicate')} duplicates, "
              f"{report.count('refused')} refused, into {report.into}")
    # nothing imported is the input's fault (every file refused, or none given): the user-error code
    return EXIT_OK if report.count("imported") or report.count("duplicate") else EXIT_USER_ERROR


def _check(args) -> int:
    from trainer.data.health import check_dataset

    report = check_dataset(args.folder, args.arch, args.batch_size, max_tokens=args.max_tokens,
                           repeats=args.repeats, resolution=args.resolution)
    print(report.to_json() if args.json else report.to_text())
    return 0


def _caption(args) -> int:
    from trainer.data import captions as c
    from trainer.data.spec import dataset_images

    images = dataset_images(args.folder, args.only)
    reports = []
    if args.trigger:
        reports.append(c.edit_captions(images, lambda t: c.set_trigger(t, args.trigger)))
    if args.add:
        reports.append(c.edit_captions(images, lambda t: c.add_tag(t, args.add, args.position == "start")))
    if args.remove:
        reports.append(c.edit_captions(images, lambda t: c.remove_tag(t, args.remove)))
    if args.replace_tag:
        reports.append(c.edit_captions(images, lambda t: c.replace_tag(t, *args.replace_tag)))
    if args.find:
        reports.append(c.find_replace_captions(images, args.find, args.replace_with, args.regex))
    changed = sorted({p for r in reports for p in r.changed})
    skipped = sorted({p for r in reports for p in r.skipped})
    result = {"changed": changed, "skipped": skipped}
    if args.frequency:
        result["tag_frequency"] = c.tag_frequency(images)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(f"{len(changed)} captions changed" + (f", {len(skipped)} skipped:" if skipped else ""))
        for line in skipped:
            print(f"  {line}")
        for tag, n in result.get("tag_frequency", {}).items():
            print(f"  {n:5}  {tag}")
    return 0
