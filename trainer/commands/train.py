"""`lora-studio train` and `lora-studio resume`: the config resolved in layers, the run folder claimed, then
the loop (trainer.run.loop) under `guarded`, which turns every way out into an event and an exit code."""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

from trainer.commands.outcome import guarded, is_main_process
from trainer.shared import config as config_mod
from trainer.shared.errors import UserError
from trainer.shared.paths import contained_path


def register(sub) -> None:
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


def _run_options(p: argparse.ArgumentParser, out: bool = True) -> None:
    if out:
        p.add_argument("--out", type=Path, help="run folder (default: runs/NAME-DATE-TIME)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set lora.rank=16 (repeatable)")
    p.add_argument("--events", choices=["jsonl", "none"], default="none",
                   help="jsonl: JSON events on stdout and commands on stdin (what the GUI uses)")


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
    for key in ("vae", "clip_l", "t5", "text_encoder", "training_adapter"):  # a family's other files
        value = getattr(cfg.model, key)
        if value and not Path(value).expanduser().is_absolute():
            setattr(cfg.model, key, str((base / value).resolve()))


RESUME_HINT = "resume with: lora-studio resume RUN_DIR"


def cmd_train(args) -> int:
    return guarded(args, lambda sink, control: _train(args, sink, control, resume=False), RESUME_HINT)


def cmd_resume(args) -> int:
    return guarded(args, lambda sink, control: _train(args, sink, control, resume=True), RESUME_HINT)


def _train(args, sink, control, resume: bool) -> None:
    main = is_main_process()
    if resume:
        run_dir = args.run_dir.resolve()
        cfg = config_mod.load(run_dir / "config.toml", args.set)
    else:
        cfg = resolve_config(args)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = (args.out or contained_path(Path("runs"), f"{cfg.saving.output_name}-{stamp}",
                                              "config key 'saving.output_name'")).resolve()
    if main:  # with several processes, only the first writes (the others would race it)
        if not resume:
            _refuse_foreign_folder(run_dir)  # before anything is written into it, the lock file included
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
    from trainer.run.loop import train  # after the config and dataset checks: those errors come at once

    # resume --set: the run's config.toml changes only once the saved state has loaded under the new config
    # (a --set lora.rank that the state cannot fit must not leave a run that no plain resume can continue)
    resolved = copy.deepcopy(cfg)
    on_resumed = (lambda: config_mod.save(resolved, run_dir / "config.toml")) if resume and args.set and main \
        else None
    train(cfg, run_dir, sink, control, resume=resume, records=records, on_resumed=on_resumed)


def _demo_leftovers(cfg: config_mod.TrainConfig):
    """`--demo` with a real model: the demo's tiny-model choices still apply unless overridden. Say which."""
    from trainer.shared import events as ev

    demo = config_mod.read_toml(config_mod.PRESETS_DIR / "demo.toml")
    kept = [f"{section}.{key} = {value!r}" for section, table in demo.items() if isinstance(table, dict)
            for key, value in table.items() if f"{section}.{key}" not in ("model.path", "dataset.path")
            and getattr(getattr(cfg, section), key) == value]
    return ev.Warning(message="--demo with your own model keeps these demo settings: " + ", ".join(kept),
                   hint="for a real run give a config file (lora-studio train my-lora.toml), or --set each of them")


def _refuse_foreign_folder(run_dir: Path) -> None:
    from trainer.shared.errors import some_files
    from trainer.shared.run_folder import foreign_entries

    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a folder", "give a new or empty folder for the run")
    if run_dir.is_dir():
        _refuse_a_started_run(run_dir, clear=False)  # a run of ours: say to resume it rather than name its files
    if foreign := foreign_entries(run_dir):
        raise UserError(f"--out {run_dir} holds files that are not a LoRA Studio run: {some_files(foreign)}",
                        "choose a new or empty folder for --out; a run never writes into a folder of your own "
                        "files (it would replace config.toml and events.jsonl)")


def _refuse_a_started_run(run_dir: Path, clear: bool = True) -> None:
    from trainer.shared.run_folder import clear_failed_start, holds_a_run

    if holds_a_run(run_dir):
        raise UserError(f"run folder {run_dir} already holds a run",
                        f"continue it with: lora-studio resume {run_dir}; or choose another --out")
    if clear:
        clear_failed_start(run_dir)  # a start that failed before any step: nothing to protect


def _lock(run_dir: Path) -> None:
    """One engine per run folder: two (a GUI and a terminal, two resumes) would interleave their saves."""
    from trainer.shared.fsutil import lock_folder

    holder = lock_folder(run_dir)
    if holder is not None:
        raise UserError(f"run folder {run_dir} is in use by another training process (pid {holder})",
                        "wait for it to finish, or stop it (its window's Stop, or Ctrl+C) and then resume")


