"""Entry point: ``python scripts/benchmark.py --models a,b --precision bf16 --channels-last``."""

import sys

from resmg_zoo.tools.benchmark import console_main

if __name__ == "__main__":
    sys.exit(console_main())
