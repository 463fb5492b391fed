"""`python -m trainer ...` is the same entry as `lora-studio ...`."""

import logging
import os
import sys

from trainer.commands.dispatch import main

# Commands that may leave the stdin-reading thread (trainer.run.control) blocked in a read: the interpreter's
# teardown would abort on that thread's buffered-reader lock ("Fatal Python error: _enter_buffered_busy",
# SIGABRT after a successful run), and it spends ~0.5 s freeing objects anyway.
QUICK_EXIT_COMMANDS = ("train", "resume", "dataset", "serve")


def exit_now(code: int) -> None:
    """End a finished training process without the interpreter's teardown, which spent ~0.5 s freeing torch,
    diffusers and transformers objects one by one after the last byte was written (2-core CPU, tiny model).
    By then every file is written, fsynced and closed, the TensorBoard log and the event stream too; what is
    left is flushing the standard streams and the log handlers. One process only: a multi-GPU run leaves
    through accelerate's normal shutdown."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(code)


def entry() -> None:
    """`python -m trainer` and the `lora-studio` command (pyproject's script entry)."""
    code = main()
    if sys.argv[1:2] and sys.argv[1] in QUICK_EXIT_COMMANDS and os.environ.get("WORLD_SIZE", "1") == "1":
        exit_now(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
