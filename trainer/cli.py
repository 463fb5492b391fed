"""`lora-studio` / `python -m trainer`: argument parsing for every headless command.

Heavy imports (torch, diffusers) happen inside the commands, so `--help` and the GUI launch stay instant.
With no command, `lora-studio` opens the GUI in a separate program (`python -m app`): the engine never
imports the GUI.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from trainer import config as config_mod
from trainer.errors import UserError

REPO = Path(__file__).resolve().parent.parent
EXIT_USER_ERROR, EXIT_BUG = 2, 1
GUI_OPTIONS = ("--self-test",)  # `lora-studio --self-test` is the app's check of an installation


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lora-studio", description="Train Stable Diffusion LoRA adapters.",
                                epilog="With no command it opens the app; `lora-studio --self-test` runs the demo "
                                       "through the app to check an installation (with no display: "
                                       "QT_QPA_PLATFORM=offscreen).")
    sub = p.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train a LoRA from a config file (or --demo)")
    t.add_argument("config", nargs="?", type=Path, help="TOML config (full or sparse)")
    t.add_argument("--demo", action="store_true", help="tiny built-in model + bundled sample images")
    t.add_argument("--preset", action="append", default=[],
                   help="a preset from presets/ applied under the config file; repeat to stack them, "
                        "e.g. --preset sdxl-character --preset sdxl-vram-8gb")
    _run_options(t)
    r = sub.add_parser("resume", help="continue an interrupted run from its last saved state")
    r.add_argument("run_dir", type=Path)
    _run_options(r, out=False)
    i = sub.add_parser("inspect", help="what a checkpoint or adapter file is")
    i.add_argument("file", type=Path)
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--require-base", action="store_true",
                   help="fail with an explanation unless FILE is a base model to train on")
    from trainer.export.commands import register as register_export

    register_export(sub)
    from trainer.data.commands import register as register_dataset

    register_dataset(sub)
    from trainer.system import register as register_system

    register_system(sub)
    from trainer.plan import register as register_plan

    register_plan(sub)
    from trainer.tryit.commands import register as register_tryit

    register_tryit(sub)
    return p


def _run_options(p: argparse.ArgumentParser, out: bool = True) -> None:
    if out:
        p.add_argument("--out", type=Path, help="run folder (default: runs/NAME-DATE-TIME)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set lora.rank=16 (repeatable)")
    p.add_argument("--events", choices=["jsonl", "none"], default="none",
                   help="jsonl: JSON events on stdout and commands on stdin (what the GUI uses)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv == list(GUI_OPTIONS):  # the app's own option (app/__main__.py) passes through
        return _launch_gui(argv)
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return EXIT_USER_ERROR
    _setup_logging()
    from trainer.data.commands import cmd_dataset
    from trainer.export.commands import cmd_export, cmd_resize
    from trainer.plan import cmd_plan
    from trainer.system import cmd_system
    from trainer.tryit.commands import cmd_generate, cmd_merge, cmd_serve

    handler = {"train": cmd_train, "resume": cmd_resume, "inspect": cmd_inspect, "export": cmd_export,
               "resize": cmd_resize, "dataset": cmd_dataset,
               "system": cmd_system, "plan": _user_errors(cmd_plan),
               "generate": cmd_generate, "serve": cmd_serve, "merge": cmd_merge}[args.command]
    return handler(args)


def _user_errors(handler):
    """A one-shot command: a UserError becomes `error: ...` on stderr and exit code 2."""
    def run(args) -> int:
        try:
            return handler(args)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
    return run


def _launch_gui(argv: list[str]) -> int:
    cmd = [sys.executable, "-m", "app", *argv]
    if os.name == "posix":
        os.execv(sys.executable, cmd)
    return subprocess.call(cmd)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("diffusers", "transformers", "accelerate", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network at run time
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def resolve_config(args, need_dataset: bool = True) -> config_mod.TrainConfig:
    """defaults <- preset <- demo preset <- config file <- --set, with paths made absolute."""
    cfg = config_mod.TrainConfig()
    for name in args.preset:
        cfg = config_mod.load_preset(name, base=cfg)
    if args.demo:
        cfg = config_mod.load(config_mod.PRESETS_DIR / "demo.toml", base=cfg)
        _absolutize(cfg, config_mod.PRESETS_DIR)
    if args.config:
        cfg = config_mod.load(args.config, base=cfg)
        _absolutize(cfg, args.config.resolve().parent)
    if not args.config and not args.demo:
        raise UserError(f"{args.command} needs a config file or --demo",
                        f"lora-studio {args.command} my-lora.toml, or --demo")
    cfg = config_mod.apply_overrides(cfg, args.set)
    _absolutize(cfg, Path.cwd())
    if need_dataset and not cfg.dataset.path:
        raise config_mod.ConfigError("config key 'dataset.path' is empty", "set it to your image folder")
    return cfg


def _absolutize(cfg: config_mod.TrainConfig, base: Path) -> None:
    # Relative paths in a config file mean "next to the config file", so configs can travel with datasets.
    if cfg.dataset.path and not Path(cfg.dataset.path).expanduser().is_absolute():
        cfg.dataset.path = str((base / cfg.dataset.path).resolve())
    if not cfg.model.path.startswith("demo:") and not Path(cfg.model.path).expanduser().is_absolute():
        cfg.model.path = str((base / cfg.model.path).resolve())


RESUME_HINT = "resume with: lora-studio resume RUN_DIR"


def cmd_train(args) -> int:
    return guarded(args, lambda sink, control: _train(args, sink, control, resume=False), RESUME_HINT)


def cmd_resume(args) -> int:
    return guarded(args, lambda sink, control: _train(args, sink, control, resume=True), RESUME_HINT)


def _train(args, sink, control, resume: bool) -> None:
    main = _is_main_process()
    if resume:
        run_dir = args.run_dir.resolve()
        cfg = config_mod.load(run_dir / "config.toml", args.set)
    else:
        cfg = resolve_config(args)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = (args.out or Path("runs") / f"{cfg.saving.output_name}-{stamp}").resolve()
    if main:  # with several processes, only the first writes (the others would race it)
        run_dir.mkdir(parents=True, exist_ok=True)
        _lock(run_dir)
        if not resume:
            _refuse_a_started_run(run_dir)
        config_mod.save(cfg, run_dir / "config.toml")
        sink.attach_run_dir(run_dir)
    if not resume and args.demo and not cfg.model.path.startswith("demo:"):
        sink.emit(_demo_leftovers(cfg))
    from trainer.data.records import load_records, unreadable_images_warning

    unreadable: list = []
    records = load_records(cfg, unreadable)
    if warning := unreadable_images_warning(unreadable):
        sink.emit(warning)
    from trainer.loop import train  # after the config and dataset checks: those errors come at once

    train(cfg, run_dir, sink, control, resume=resume, records=records)


def _demo_leftovers(cfg: config_mod.TrainConfig):
    """`--demo` with a real model: the demo's tiny-model choices still apply unless overridden. Say which."""
    from trainer import events as ev

    demo = config_mod.read_toml(config_mod.PRESETS_DIR / "demo.toml")
    kept = [f"{section}.{key} = {value!r}" for section, table in demo.items() if isinstance(table, dict)
            for key, value in table.items() if f"{section}.{key}" not in ("model.path", "dataset.path")
            and getattr(getattr(cfg, section), key) == value]
    return ev.Warning(message="--demo with your own model keeps these demo settings: " + ", ".join(kept),
                   hint="for a real run give a config file (lora-studio train my-lora.toml), or --set each of them")


def _refuse_a_started_run(run_dir: Path) -> None:
    from trainer.run_folder import clear_failed_start, holds_a_run

    if holds_a_run(run_dir):
        raise UserError(f"run folder {run_dir} already holds a run",
                        f"continue it with: lora-studio resume {run_dir}; or choose another --out")
    clear_failed_start(run_dir)  # a start that failed before any step: nothing to protect


def _lock(run_dir: Path) -> None:
    """One engine per run folder: two (a GUI and a terminal, two resumes) would interleave their saves."""
    from trainer.fsutil import lock_folder

    holder = lock_folder(run_dir)
    if holder is not None:
        raise UserError(f"run folder {run_dir} is in use by another training process (pid {holder})",
                        "wait for it to finish, or stop it (its window's Stop, or Ctrl+C) and then resume")


def _is_main_process() -> bool:
    """Rank 0 of a multi-process launch (accelerate launch / torchrun set RANK), or a plain run."""
    return os.environ.get("RANK", "0") == "0"


def guarded(args, body, interrupted_hint: str) -> int:
    """Run a long command that streams events (train, resume, dataset caption --model): `body(sink,
    control)` returns its exit code (None: 0). Every failure becomes an `error` event and an exit code,
    never a hang; the sink is closed on every path."""
    from trainer import events as ev
    from trainer.control import Control
    from trainer.sink import EventSink

    jsonl = args.events == "jsonl"
    stream = None
    if jsonl:
        from trainer.sink import claim_stdout_for_events

        stream = claim_stdout_for_events()
    sink, control = EventSink(stream, progress_bar=not jsonl and sys.stderr.isatty()), Control()
    sink.enabled = _is_main_process()
    control.install_signal_handlers()
    if jsonl:
        control.listen_stdin()
    try:
        return body(sink, control) or 0
    except UserError as exc:
        sink.emit(ev.Error(message=exc.message, hint=exc.hint, kind=type(exc).__name__))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sink.emit(ev.Error(message="interrupted", hint=interrupted_hint, kind="interrupted"))
        return 130
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        sink.emit(ev.Error(message=f"{type(exc).__name__}: {exc}", kind="bug",
                           hint="this is a bug in LoRA Studio; the log above has the details"))
        return EXIT_BUG
    finally:
        sink.close()


def cmd_inspect(args) -> int:
    from trainer.models.detect import inspect_base_model, inspect_file

    try:
        if args.require_base:
            inspect_base_model(args.file)
        info = inspect_file(args.file)
        if info["kind"] == "lora":
            info["verification"] = _verify_summary(args.file)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(_format_inspect(info))
    return 0


def _verify_summary(path: Path) -> str:
    from trainer.export.verify import verify_file

    try:
        return verify_file(path).summary()
    except (KeyError, ValueError) as exc:  # an adapter from another trainer without our metadata
        return f"not verified ({exc})"


def _format_inspect(info: dict) -> str:
    lines = [f"{info['path']}"]
    for key in ("format", "kind", "arch", "prediction_type", "size", "key_count", "rank", "verification"):
        if info.get(key) not in (None, ""):
            lines.append(f"  {key + ':':17} {info[key]}")
    meta = info.get("metadata") or {}
    if meta:
        lines.append(f"  metadata ({len(meta)} keys):")
        for key in sorted(meta):
            value = str(meta[key]).replace("\n", " ")
            lines.append(f"    {key}: {value[:100]}{'…' if len(value) > 100 else ''}")
    return "\n".join(lines)
