"""The real datasets of ``RESMG_ZOO_DATA`` and small archives cut from them (never synthetic images), and the
project's published weights mirror."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """Whether this is CI (``$CI`` set and not ``false``/``0``; ``.ci/run`` exports ``CI=true``): there a test
    whose inputs are missing fails instead of skipping."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _shared(variable: str, name: str, marker: str, what: str) -> Path:
    """``$variable`` (set by .ci/run), else ``../shared/<name>``; in CI (:func:`in_ci`) a missing one is an
    error, not a skip."""
    folder = Path(os.environ.get(variable) or REPO_ROOT.parent / "shared" / name)
    if not (folder / marker).exists():
        if in_ci():
            raise RuntimeError(f"CI must have {what}: no {marker} in {folder}")
        pytest.skip(f"no {what} in {folder} (set {variable})")
    return folder.resolve()


def real_data_dir() -> Path:
    """The real datasets (``RESMG_ZOO_DATA``, else ``../shared/data``)."""
    return _shared("RESMG_ZOO_DATA", "data", "mnist.zip", "the real datasets")


def shared_hub_dir() -> Path:
    """The project's published weights mirror (``RESMG_ZOO_HUB_DIR``, else ``../shared/hub``)."""
    return _shared("RESMG_ZOO_HUB_DIR", "hub", "weights_manifest.json", "the published weights mirror")


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
