"""sha256 of files (datasets are cached by it; checkpoints and published weights are checked by it).

A file that is checked and then used is read once: :func:`read_with_sha256` returns the bytes whose
digest it compared, and the caller loads those bytes — no second read through which a concurrent
writer could swap the file between the check and the load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


MAX_WEIGHTS_BYTES = 8 << 30  # a weights file, checkpoint or published: far above any model of the zoo


def sha256_of(data: bytes) -> str:
    """The sha256 of bytes already read (hex)."""
    return hashlib.sha256(data).hexdigest()


def read_with_sha256(path: str | Path, limit: int = MAX_WEIGHTS_BYTES, what: str = "file") -> tuple[bytes, str]:
    """The bytes of ``path`` and their sha256, from one bounded read: a regular file of at most ``limit``
    bytes (:func:`~resmg_zoo.core.files.read_regular`: never a FIFO or a device)."""
    from .files import read_regular

    data = read_regular(path, limit, what)
    return data, sha256_of(data)
