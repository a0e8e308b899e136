"""Entry point: ``python scripts/export.py --model NAME[.TAG] --format {torchscript,onnx}`` (resmg_zoo.tools.export)."""

import sys

from resmg_zoo.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
