"""Entry point: ``python scripts/loss_landscape.py --run DIR --out PREFIX`` (see resmg_zoo.tools.landscape)."""

import sys

from resmg_zoo.tools.landscape import main

if __name__ == "__main__":
    sys.exit(main())
