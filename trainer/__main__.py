"""`python -m trainer ...` is the same entry as `lora-studio ...`."""

import sys

from trainer.cli import main

if __name__ == "__main__":
    sys.exit(main())
