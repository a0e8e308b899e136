"""Entry point: ``python scripts/evaluate.py --run DIR --split test``."""

import sys

from resmg_zoo.tools.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
