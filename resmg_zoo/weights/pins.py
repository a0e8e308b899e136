"""The files a published folder holds beside its weights, each pinned by sha256 in the folder's manifest entry:
the int8 record (``int8.json``, entry key ``int8``: read by code, so it must also be there only where pinned) and
the evaluation report (``report.json`` and its pictures, entry key ``report``: read by the card).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.hashing import file_sha256
from .manifest import INT8_RECORD_NAME, REPORT_JSON


def int8_record_problems(folder: Path, entry: dict[str, Any]) -> list[str]:
    """Where the folder's ``int8.json`` is not the one the entry's ``int8`` pins (or is there unlisted)."""
    pin = entry.get("int8") or {}
    record = folder / INT8_RECORD_NAME
    if "sha256" not in pin:
        return [f"{INT8_RECORD_NAME}: in the folder, but the entry lists none"] if record.exists() else []
    return _pinned_problems(folder, {INT8_RECORD_NAME: pin["sha256"]})


def report_problems(folder: Path, entry: dict[str, Any]) -> list[str]:
    """Where the folder's report files are not the ones the entry's ``report`` pins (``files``: name → sha256)."""
    pins = (entry.get("report") or {}).get("files") or {}
    if not pins:
        unlisted = (folder / REPORT_JSON).exists()
        return [f"{REPORT_JSON}: in the folder, but the entry lists no report"] if unlisted else []
    return _pinned_problems(folder, pins)


def _pinned_problems(folder: Path, pins: dict[str, str]) -> list[str]:
    problems = []
    for name, sha256 in pins.items():
        path = folder / name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{name}: missing (or not a regular file), but the entry pins one")
        elif (digest := file_sha256(path)) != sha256:
            problems.append(f"{name}: sha256 {digest}, the entry says {sha256}")
    return problems
