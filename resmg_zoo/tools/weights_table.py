"""Print the README's "Pretrained weights" table from a weights manifest (never typed by hand).

python -m resmg_zoo.tools.weights_table                      # the repository's weights_manifest.json
python -m resmg_zoo.tools.weights_table --manifest DIR/weights_manifest.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from ..core.paper import TABLE_OF_DATASET, paper_result
from ..weights.manifest import load_manifest, repo_manifest_path


def _paper_top1(entry: dict[str, Any]) -> str:
    table = TABLE_OF_DATASET.get(entry["dataset"])
    row = paper_result(entry["model"], table) if table else None
    return f"{row['top1']:.2f} (Table {table}, {row['params_reported']})" if row else "—"


def markdown_table(manifest: dict[str, Any]) -> str:
    entries = manifest["entries"]
    if not entries:
        return "_No checkpoint is published yet._"
    lines = [
        "| hub id | params | model args | top-1 | top-5 | int8 top-1 | paper top-1 | recipe | training time "
        "| hardware | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        args = ", ".join(f"{k}={v}" for k, v in e["model_args"].items() if k not in ("num_classes", "in_chans"))
        recipe = e["recipe"]
        int8 = f"{e['int8']['top1']:.2f}" if "int8" in e else "—"  # resmg-mirror refresh --int8
        lines.append(
            f"| `{e['hub_id']}` | {e['params']:,} | {args or 'default'} | {e['top1']:.2f} | {e['top5']:.2f} | "
            f"{int8} | {_paper_top1(e)} | {recipe['name']}, {recipe['epochs']:g} ep, {recipe['precision']} | "
            f"{e['training_seconds'] / 60:.1f} min | {e['hardware']} | {e['date']} |"
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resmg_zoo.tools.weights_table", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--manifest", default=str(repo_manifest_path()))
    args = parser.parse_args(argv)
    print(markdown_table(load_manifest(Path(args.manifest))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
