"""``python -m resmg_zoo.train ...`` (see :mod:`resmg_zoo.train.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
