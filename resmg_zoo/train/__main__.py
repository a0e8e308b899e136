"""``python -m resmg_zoo.train ...`` (see :mod:`resmg_zoo.train.cli`)."""

import sys

from .cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
