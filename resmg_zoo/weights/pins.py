"""The files a published folder holds beside its weights, each pinned by sha256 in the folder's manifest entry:
the int8 record (``int8.json``, entry key ``int8``: read by code, so it must also be there only where pinned) and
the evaluation report (``report.json`` and its pictures, entry key ``report``: read by the card).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.files import UnreadableFileError, finite_number, read_json_object
from ..core.hashing import file_sha256
from .manifest import INT8_RECORD_NAME, REPORT_FILES, REPORT_JSON

MAX_PINNED_BYTES = 64 << 20  # a report's record or picture, an int8 record: a few hundred KB; a report of 1,000
# classes about 9 MB


def int8_record_problems(folder: Path, entry: dict[str, Any]) -> list[str]:
    """Where the folder's ``int8.json`` is not the one the entry's ``int8`` pins (or is there unlisted)."""
    pin = entry.get("int8") or {}
    record = folder / INT8_RECORD_NAME
    if "sha256" not in pin:
        return [f"{INT8_RECORD_NAME}: in the folder, but the entry lists none"] if record.exists() else []
    return _pinned_problems(folder, {INT8_RECORD_NAME: pin["sha256"]})


def report_problems(folder: Path, entry: dict[str, Any]) -> list[str]:
    """Where the folder's report files are not the ones the entry's ``report`` pins (``files``: name → sha256), a
    report's file is there unpinned (a stale picture the card would no longer match), or the pinned figures are not
    those of the pinned ``report.json`` (the card and the ``model-index`` show the figures)."""
    pin = entry.get("report") or {}
    pins = pin.get("files") or {}
    unpinned = [n for n in REPORT_FILES if n not in pins and ((folder / n).exists() or (folder / n).is_symlink())]
    problems = [f"{name}: in the folder, but the entry's report does not pin it" for name in unpinned]
    problems += _pinned_problems(folder, pins)
    if pins and not problems:
        problems += _figures_problems(folder / REPORT_JSON, pin)
    return problems


def _figures_problems(path: Path, pin: dict[str, Any]) -> list[str]:
    try:
        report = read_json_object(path, "the published report")  # as the card reads it
    except UnreadableFileError as err:
        return [str(err)]
    bins = report.get("calibration_bins")
    theirs = dict(
        top1=round(report["top1"], 4) if finite_number(report.get("top1")) else None,
        top5=round(report["top5"], 4) if finite_number(report.get("top5")) else None,
        ece=round(report["ece"], 6) if finite_number(report.get("ece")) else None,
        images=report["images"] if type(report.get("images")) is int else None,
        ece_bins=len(bins) if isinstance(bins, list) else None,
    )
    return [
        f"{REPORT_JSON}: {key} is {value!r}, the entry's report says {pin.get(key)!r}"
        for key, value in theirs.items()
        if value != pin.get(key)
    ]


def _pinned_problems(folder: Path, pins: dict[str, str]) -> list[str]:
    problems = []
    for name, sha256 in pins.items():
        path = folder / name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{name}: missing (or not a regular file), but the entry pins one")
        elif path.stat().st_size > MAX_PINNED_BYTES:
            problems.append(
                f"{name}: {path.stat().st_size:,} bytes, more than a pinned file has ({MAX_PINNED_BYTES:,})"
            )
        elif (digest := file_sha256(path)) != sha256:
            problems.append(f"{name}: sha256 {digest}, the entry says {sha256}")
    return problems
