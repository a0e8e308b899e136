"""Entry point: ``python scripts/train.py ...`` or ``torchrun --nproc_per_node N scripts/train.py ...``."""

import sys

from resmg_zoo.train.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
