"""``python scripts/time_to_accuracy.py RUN [RUN ...]``: see :mod:`resmg_zoo.tools.time_to_accuracy`."""

import sys

from resmg_zoo.tools.time_to_accuracy import main

if __name__ == "__main__":
    sys.exit(main())
