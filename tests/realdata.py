"""Small archives cut from the real datasets of ``RESMG_ZOO_DATA`` (never synthetic images)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
    """``$RESMG_ZOO_DATA`` (set by .ci/run), else ``../shared/data``; the real-data tests need it."""
    folder = Path(os.environ.get("RESMG_ZOO_DATA") or REPO_ROOT.parent / "shared" / "data")
    if not (folder / "mnist.zip").exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"CI must have the real datasets: no mnist.zip in {folder}")
        pytest.skip(f"no real datasets in {folder} (set RESMG_ZOO_DATA)")
    return folder


def subset_zip(source: Path, target: Path, per_class: dict[str, int], rename: dict[str, str] | None = None) -> Path:
    """Copy the first ``per_class[split]`` images of every class of each split into a new zip."""
    taken: dict[tuple[str, str], int] = {}
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            split, cls, _ = name.split("/")
            if split not in per_class or taken.get((split, cls), 0) >= per_class[split]:
                continue
            taken[(split, cls)] = taken.get((split, cls), 0) + 1
            out_name = name if rename is None else "/".join([split, rename.get(cls, cls), name.split("/")[2]])
            dst.writestr(out_name, src.read(name))
    return target
