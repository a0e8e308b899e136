"""Entry point: ``python scripts/reproduce.py --table N --budget NAME`` (see resmg_zoo.tools.reproduce)."""

import sys

from resmg_zoo.tools.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
