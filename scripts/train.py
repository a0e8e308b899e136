"""Entry point: ``python scripts/train.py ...`` or ``torchrun --nproc_per_node N scripts/train.py ...``."""

import sys

from resmg_zoo.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
