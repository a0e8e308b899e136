"""Entry point: ``python scripts/push_to_hub.py --run DIR (--mirror DIR | --repo-id ID | --dry-run)``."""

import sys

from resmg_zoo.tools.push_to_hub import main

if __name__ == "__main__":
    sys.exit(main())
