"""Build a new ImageFolder zip from an existing one by merging its classes into new labels.

    resmg-relabel ../shared/data/cifar10.zip runs/vehicles_animals.zip \\
        --map vehicle=airplane,automobile,ship,truck animal=bird,cat,deer,dog,frog,horse \\
        --per-class train=500 test=200

Each new class folder holds the images of its source classes (file names prefixed with the source
class, so nothing collides); ``--per-class`` keeps the first N images of every source class per
split (balanced subsets), after skipping the first ``--offset`` ones (to stay clear of images
another subset used). Image bytes are copied unchanged. Source classes not named in any
``--map`` are left out.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path
from typing import Optional

from ..core.atomic import atomic_path
from ..core.cli import report_error
from ..core.errors import ResmgError, UsageError


def parse_mapping(items: list[str]) -> dict[str, str]:
    """``["vehicle=airplane,ship", "animal=cat"]`` → ``{"airplane": "vehicle", "ship": "vehicle", "cat": "animal"}``."""
    mapping: dict[str, str] = {}
    for item in items:
        new, sep, old = item.partition("=")
        if not sep or not new or not old:
            raise UsageError(f"--map takes NEW=OLD1,OLD2,..., got {item!r}")
        for source in (c.strip() for c in old.split(",") if c.strip()):
            if source in mapping:
                raise UsageError(f"source class {source!r} is mapped twice ({mapping[source]!r} and {new!r})")
            mapping[source] = new
    return mapping


def parse_limits(items: Optional[list[str]], option: str = "--per-class") -> dict[str, int]:
    limits = {}
    for item in items or []:
        split, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise UsageError(f"{option} takes SPLIT=N, got {item!r}")
        limits[split] = int(count)
    return limits


def relabel(
    source: Path,
    target: Path,
    mapping: dict[str, str],
    limits: dict[str, int],
    offsets: Optional[dict[str, int]] = None,
) -> dict[str, int]:
    """Write ``target``; returns the number of images per ``split/new_class``."""
    try:
        archive = zipfile.ZipFile(source)
    except (OSError, zipfile.BadZipFile) as err:
        raise UsageError(f"{source} is not a readable zip archive: {err}") from None
    with archive as src:
        names = [n for n in src.namelist() if not n.endswith("/")]
        found = {n.split("/")[1] for n in names if n.count("/") == 2}
        missing = sorted(set(mapping) - found)
        if missing:
            raise UsageError(f"{source} has no class {', '.join(missing)}; its classes are {', '.join(sorted(found))}")
        offsets = offsets or {}
        seen: dict[tuple[str, str], int] = {}
        taken: dict[tuple[str, str], int] = {}
        counts: dict[str, int] = {}
        with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
            for name in names:
                parts = name.split("/")
                if len(parts) != 3 or parts[1] not in mapping:
                    continue
                split, cls, file = parts
                key = (split, cls)
                seen[key] = seen.get(key, 0) + 1
                if seen[key] <= offsets.get(split, 0):
                    continue
                if split in limits and taken.get(key, 0) >= limits[split]:
                    continue
                taken[key] = taken.get(key, 0) + 1
                new = mapping[cls]
                dst.writestr(f"{split}/{new}/{cls}_{file}", src.read(name))
                counts[f"{split}/{new}"] = counts.get(f"{split}/{new}", 0) + 1
    return counts


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="resmg-relabel", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="an ImageFolder zip (<split>/<class>/<file>)")
    parser.add_argument("target", type=Path, help="the zip to write")
    parser.add_argument("--map", nargs="+", required=True, metavar="NEW=OLD1,OLD2", help="new class = source classes")
    parser.add_argument("--per-class", nargs="*", metavar="SPLIT=N", help="first N images of each source class")
    parser.add_argument("--offset", nargs="*", metavar="SPLIT=N", help="skip the first N images of each source class")
    args = parser.parse_args(argv)
    try:
        limits, offsets = parse_limits(args.per_class), parse_limits(args.offset, "--offset")
        counts = relabel(args.source, args.target, parse_mapping(args.map), limits, offsets)
    except ResmgError as err:
        return report_error(err)
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
