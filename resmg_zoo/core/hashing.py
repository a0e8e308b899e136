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


def read_with_sha256(path: str | Path) -> tuple[bytes, str]:
    """The bytes of ``path`` and their sha256, from one read."""
    data = Path(path).read_bytes()
    return data, hashlib.sha256(data).hexdigest()
