"""Entry point of the frozen bundle: one executable is both the desktop app and the engine.

The GUI starts the engine as `sys.executable -m trainer ...` (DESIGN.md: the GUI never trains in its own
process). In a PyInstaller bundle `sys.executable` is this program and there is no interpreter to take
`-m`, so the two module names are dispatched here. Any other arguments are the `lora-studio` CLI, so the
bundle also trains headless: `LoRA-Studio/lora-studio train --demo`.
"""

import multiprocessing
import sys


def main() -> int:
    multiprocessing.freeze_support()  # data-loader workers re-enter this executable
    args = sys.argv[1:]
    if args[:2] == ["-m", "trainer"]:
        from trainer.commands.dispatch import main as engine

        return engine(args[2:])
    if args[:2] == ["-m", "app"] or not args or args[0] == "--self-test":
        from app.__main__ import main as gui

        return gui()
    from trainer.commands.dispatch import main as cli

    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
