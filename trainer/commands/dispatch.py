"""`lora-studio` / `python -m trainer`: the dispatcher. Each command lives in its own module here
(register adds its arguments; its handler runs it); trainer.commands.outcome turns what happens into the
exit code.

Heavy imports (torch, diffusers) happen inside the commands, so `--help` and the GUI launch stay instant.
With no command, `lora-studio` opens the GUI in a separate program (`python -m app`): the engine never
imports the GUI.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys

from trainer.commands.outcome import EXIT_USER_ERROR, one_shot

GUI_OPTIONS = ("--self-test",)  # `lora-studio --self-test` is the app's check of an installation
COMMAND_MODULES = ("train", "inspect", "export", "dataset", "system", "plan", "tryit")
# command -> (module in trainer.commands, handler, answers once: wrapped by one_shot). Streaming commands
# (train, resume, dataset caption --model) and serve report through their own events.
HANDLERS = {
    "train": ("train", "cmd_train", False), "resume": ("train", "cmd_resume", False),
    "inspect": ("inspect", "cmd_inspect", True), "export": ("export", "cmd_export", True),
    "resize": ("export", "cmd_resize", True), "dataset": ("dataset", "cmd_dataset", False),
    "system": ("system", "cmd_system", True), "plan": ("plan", "cmd_plan", True),
    "generate": ("tryit", "cmd_generate", True), "serve": ("tryit", "cmd_serve", False),
    "merge": ("tryit", "cmd_merge", True),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lora-studio", description="Train LoRA adapters for image models.",
                                epilog="With no command it opens the app; `lora-studio --self-test` runs the demo "
                                       "through the app to check an installation (with no display: "
                                       "QT_QPA_PLATFORM=offscreen).")
    sub = p.add_subparsers(dest="command")
    for name in COMMAND_MODULES:
        _module(name).register(sub)
    return p


def _module(name: str):
    return importlib.import_module(f"trainer.commands.{name}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv == list(GUI_OPTIONS):  # the app's own option (app/__main__.py) passes through
        return _launch_gui(argv)
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return EXIT_USER_ERROR
    _setup_logging()
    module, name, once = HANDLERS[args.command]
    handler = getattr(_module(module), name)
    return (one_shot(handler) if once else handler)(args)


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
