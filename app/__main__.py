"""`python -m app` / `lora-studio` with no command: the desktop GUI."""

import sys


def main() -> int:
    # The desktop window arrives with the GUI issue; until then say so plainly instead of failing.
    print("The LoRA Studio desktop window is not built yet.\n"
          "Train headless meanwhile:  lora-studio train --demo   (or: lora-studio train CONFIG.toml)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
