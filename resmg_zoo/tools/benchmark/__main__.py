"""``python -m resmg_zoo.tools.benchmark``."""

import sys

from .command import console_main

sys.exit(console_main())
