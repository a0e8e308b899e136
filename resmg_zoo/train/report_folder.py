"""Where an evaluation report is written (:mod:`.report`): a folder that is new, empty, or an earlier report's —
never over a user's files, through a link, or onto a file. The folder is opened once, without following a link,
and written through that descriptor in two steps (every file to a temporary name first, then each renamed onto
its own), so a folder swapped for a link after the check is not followed and a failed write changes nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from ..core.errors import UsageError
from ..core.files import MAX_JSON_BYTES, UnreadableFileError, parse_json
from ..weights.manifest import REPORT_JSON, REPORT_PICTURES

REPORT_NAMES = frozenset({REPORT_JSON, *REPORT_PICTURES})
REPORT_KEYS = ("confusion", "per_class", "calibration_bins")  # what makes a report.json one of ours
LEFTOVER = re.compile(r"\.[a-z_]+\.(json|png)\.[0-9a-f]{12}\.(tmp|old)")  # what a killed write may leave


class ReportFolderError(UsageError):
    """The report's folder is one a report may not write into (or cannot be written); nothing was written."""


def check_report_folder(folder: Path) -> None:
    """Before anything is computed: the folder is new (under a folder that can be written), empty, or an earlier
    report's (its ``report.json`` one of ours, every other file a report's picture, each a regular file)."""
    if not str(folder).strip():
        raise ReportFolderError("the report's folder is an empty path")
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ReportFolderError(f"{folder} is a link or a file, not a folder for a report")
    if folder.is_dir():
        fd = _open_folder(folder)
        try:
            _check_contents(fd, folder)
        finally:
            os.close(fd)
        return
    above = next((p for p in folder.absolute().parents if p.exists() or p.is_symlink()), Path("/"))
    if not above.is_dir() or not os.access(above, os.W_OK | os.X_OK):
        raise ReportFolderError(f"{folder} cannot be made: {above} is not a folder this user may write into")


def write_report_files(folder: Path, files: dict[str, bytes]) -> list[Path]:
    """``files`` (a report's names → bytes) into ``folder``, checked again as it is opened; returns their paths."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportFolderError(f"{folder} cannot be made ({err.strerror or err})") from None
    fd = _open_folder(folder)
    try:
        _check_contents(fd, folder)
        _write_all(fd, folder, files)
    finally:
        os.close(fd)
    return [folder / name for name in files]


def _write_all(fd: int, folder: Path, files: dict[str, bytes]) -> None:
    """Every file to a temporary name, every file it replaces linked aside, then each renamed onto its own; on any
    failure the renamed ones are put back from their links, so the folder holds the old report or the new one."""
    temporary: dict[str, str] = {}
    aside: dict[str, str] = {}
    done: list[str] = []
    try:
        for name, data in files.items():
            temporary[name] = f".{name}.{secrets.token_hex(6)}.tmp"
            out = os.open(temporary[name], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=fd)
            with os.fdopen(out, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for name in files:
            if name in os.listdir(fd):  # the earlier report's file, kept under another name until the end
                aside[name] = f".{name}.{secrets.token_hex(6)}.old"
                os.link(name, aside[name], src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
        for name, tmp in temporary.items():
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            done.append(name)
    except OSError as err:
        for name in done:  # back to the earlier report's file, or to no file
            if name in aside:
                _quietly(lambda n=name: os.replace(aside.pop(n), n, src_dir_fd=fd, dst_dir_fd=fd))
            else:
                _quietly(lambda n=name: os.unlink(n, dir_fd=fd))
        for leftover in [*temporary.values(), *aside.values()]:
            _quietly(lambda t=leftover: os.unlink(t, dir_fd=fd))
        raise ReportFolderError(f"the report cannot be written into {folder} ({err.strerror or err})") from None
    for old in aside.values():
        _quietly(lambda o=old: os.unlink(o, dir_fd=fd))


def _quietly(step: Callable[[], object]) -> None:
    """A clean-up step whose failure must not hide the error being reported."""
    try:
        step()
    except OSError:
        pass


def _open_folder(folder: Path) -> int:
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as err:
        raise ReportFolderError(f"{folder} is not a folder a report may write into ({err.strerror or err})") from None


def _check_contents(fd: int, folder: Path) -> None:
    """The opened folder is empty or an earlier report's (see :func:`check_report_folder`)."""
    names = [n for n in os.listdir(fd) if not LEFTOVER.fullmatch(n)]  # a killed write's temporary files are ours
    kinds = {name: os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode for name in names}
    foreign = sorted(n for n, mode in kinds.items() if n not in REPORT_NAMES or not stat.S_ISREG(mode))
    if not foreign and names and not _is_a_report(fd, kinds):
        foreign = sorted(names)  # a report's file names, but no report.json of ours among them
    if foreign:
        raise ReportFolderError(
            f"{folder} holds files a report did not write ({', '.join(foreign[:5])}): give a new or empty folder"
        )


def _is_a_report(fd: int, kinds: dict[str, int]) -> bool:
    if REPORT_JSON not in kinds or os.stat(REPORT_JSON, dir_fd=fd, follow_symlinks=False).st_size > MAX_JSON_BYTES:
        return False
    handle = os.open(REPORT_JSON, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)  # never waits on a FIFO
    with os.fdopen(handle, "rb") as f:
        data = f.read(MAX_JSON_BYTES + 1)
    try:
        record = parse_json(data, REPORT_JSON)  # a report of 1,000 classes is about 9 MB
    except UnreadableFileError:
        return False
    return isinstance(record, dict) and all(key in record for key in REPORT_KEYS)
