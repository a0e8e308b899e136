"""Entry point: ``python scripts/export.py --model NAME[.TAG] --format {torchscript,onnx}`` (see resmg_zoo.export)."""

import sys

from resmg_zoo.export import main

if __name__ == "__main__":
    sys.exit(main())
