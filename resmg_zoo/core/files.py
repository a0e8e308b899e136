"""Reading a file a user hands us, bounded: a regular file only (never a FIFO, a device or a link to
one), at most ``limit`` bytes (``limit + 1`` are read, so a file that grows or lies about its size is
caught by what it holds, not by ``st_size``), and JSON that is valid UTF-8, not nested past
:data:`MAX_JSON_DEPTH`, and of the shape the caller asks for.

Every failure is an :class:`UnreadableFileError`, a :class:`~resmg_zoo.core.errors.UsageError` (exit 2)
naming the file: a damaged or foreign file is the user's to fix, never a traceback.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from .errors import UsageError

MAX_JSON_BYTES = 16 << 20  # a run's config, a checkpoint record, an int8 record, a manifest
MAX_JSON_DEPTH = 64  # the deepest JSON the project writes is 5 levels
NOT_REGULAR = "not a regular file (a device, FIFO or socket)"


class UnreadableFileError(UsageError):
    """A file that is not a regular file, too large, unreadable or not what it should be; the message
    names it."""


def open_regular(path: str | Path, what: str = "file", follow: bool = True) -> int:
    """A descriptor of ``path`` opened for reading if it is a regular file (symlinks followed); opened
    non-blocking, so a FIFO is refused at once instead of waiting for a writer, the type checked on the
    open descriptor (no race between a check and the open), then set blocking again. The caller closes it.
    ``follow=False``: a symbolic link is refused (a file that must be its folder's own)."""
    path = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP and not follow:
            raise UnreadableFileError(f"{what} {path} is a symbolic link, not a file of its folder") from None
        raise UnreadableFileError(f"{what} {path} cannot be read ({err.strerror or err})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else NOT_REGULAR
            raise UnreadableFileError(f"{what} {path} is {kind}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | Path, limit: int, what: str = "file", follow: bool = True) -> bytes:
    """The bytes of ``path`` if it is a regular file (:func:`open_regular`) of at most ``limit`` bytes; at
    most ``limit + 1`` bytes are read, so a file that grows or lies about its size is caught by what it holds."""
    path = Path(path)
    fd = open_regular(path, what, follow)
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise UnreadableFileError(f"{what} {path} cannot be read ({err.strerror or err})") from None
    finally:
        os.close(fd)
    if size > limit:
        raise UnreadableFileError(f"{what} {path} is larger than the {limit:,} bytes it may have")
    return b"".join(chunks)


def _depth(text: str) -> int:
    """The deepest nesting of brackets in ``text`` outside strings (an upper bound on JSON depth)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(data: bytes, where: str) -> Any:
    """``data`` as JSON: valid UTF-8, nested at most :data:`MAX_JSON_DEPTH` deep (checked before parsing,
    so no recursion limit is ever reached); :class:`UnreadableFileError` naming ``where`` otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnreadableFileError(f"{where} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise UnreadableFileError(f"{where} nests deeper than {MAX_JSON_DEPTH} levels: not a file this project wrote")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, or an integer of over 4,300 digits
        raise UnreadableFileError(f"{where} is not valid JSON ({str(err)[:200]})") from None


def read_json(path: str | Path, what: str = "file", limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON value in ``path``, read by :func:`read_regular` and parsed by :func:`parse_json`."""
    return parse_json(read_regular(path, limit, what), f"{what} {path}")


def read_json_object(path: str | Path, what: str = "file", limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """:func:`read_json`, which must give an object (a dict)."""
    value = read_json(path, what, limit)
    if not isinstance(value, dict):
        raise UnreadableFileError(f"{what} {path} holds a JSON {type(value).__name__}, not an object")
    return value


def finite_number(value: Any) -> bool:
    """Whether a JSON value is a finite number a float holds (``bool`` is not one; NaN, infinities and integers too
    large for a float are not)."""
    try:
        return type(value) in (int, float) and math.isfinite(value)
    except OverflowError:  # an integer of hundreds of digits
        return False


def require_keys(record: dict[str, Any], keys: dict[str, type | tuple[type, ...]], where: str) -> None:
    """Each of ``keys`` present in ``record`` with its type (``bool`` never passes for a number);
    :class:`UnreadableFileError` naming ``where`` and the first key that is not."""
    for key, kind in keys.items():
        value = record.get(key)
        if key not in record:
            raise UnreadableFileError(f"{where} has no {key!r}")
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
            raise UnreadableFileError(f"{where}: {key!r} is a {type(value).__name__}, not what the project writes")
