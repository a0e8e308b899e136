"""Atomic file replacement: a reader sees the old file or the complete new one, never a partial write.

Files and folders made here get the permissions an ordinary writer gives them under the process
umask (``0644``/``0755`` under the usual ``022``), not the private ``0600``/``0700`` of
:mod:`tempfile`, so a run folder or a published mirror can be shared by a team.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from .errors import BusyError, UsageError


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_shareable(path: str | Path) -> None:
    """Give a file made by :mod:`tempfile` the mode of an ordinary new file (``0666 & ~umask``),
    or a folder that of an ordinary new folder (``0777 & ~umask``)."""
    base = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


@contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """``with atomic_path(p) as tmp:`` write ``tmp``; on success it is fsynced and renamed onto ``p``.

    On error the temporary file is removed and ``p`` is left as it was. ``keep_suffix``: the
    temporary name ends in ``p``'s suffix too, for writers that insist on one (``torch.export.save``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp{path.suffix}" if keep_suffix else ".tmp"
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        make_shareable(tmp)  # after the write: a writer may have replaced the file (safetensors does)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


class LockedError(BusyError):
    """Another process holds the lock: the message names the lock file and what it guards."""


@contextmanager
def exclusive_lock(path: str | Path, what: str, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (made if missing) for the ``with`` block: two writers
    of ``what`` never interleave. If another process holds it, try again for ``wait`` seconds, then
    raise :class:`LockedError`. The lock goes with the process: a killed writer leaves nothing to clean up."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"another process is writing {what} (it holds the lock {path}); "
                        "wait for it to finish, then run this again"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step with Linux's ``renameat2(RENAME_EXCHANGE)``; ``False`` where the system
    has no such call (then the caller falls back to two renames)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def aside_folders(target: Path) -> list[Path]:
    """The old folders that :func:`replace_folder`'s fallback moved aside for ``target`` (``.<name>.old-<pid>``)."""
    return sorted(target.parent.glob(f".{target.name}.old-*")) if target.parent.is_dir() else []


def restore_aside(target: Path) -> list[str]:
    """Undo what a :func:`replace_folder` killed between its two renames left (only where the system has
    no ``renameat2``): ``target`` missing and the old folder aside. The old folder goes back to
    ``target``; a leftover aside beside a complete ``target`` is removed. Only under the writer's lock.
    Returns what was done, for the caller to say."""
    done = []
    for aside in aside_folders(target):
        if not target.exists():
            os.rename(aside, target)
            done.append(f"restored {target} from {aside.name} (a swap was interrupted)")
        else:
            shutil.rmtree(aside)
            done.append(f"removed {aside} (left by an interrupted swap)")
    return done


class NotReplaceable(UsageError):
    """What a folder swap found at its target is not what the caller may replace; it was put back."""


def replace_folder(new: Path, target: Path, replaceable: Optional[Callable[[Path], bool]] = None) -> None:
    """Put the folder ``new`` at ``target`` (same file system): readers of ``target`` see the old folder
    or the new one, complete, never neither (an atomic exchange where the system has one). The old
    folder is removed afterwards; ``new`` no longer exists when this returns. Where the system has no
    ``renameat2``, two renames: a kill between them leaves ``target`` missing and the old folder aside,
    which readers take (:func:`aside_folders`) and the next writer puts back (:func:`restore_aside`).

    ``replaceable``: checked on the old folder *after* it was swapped out and before it is removed — what is
    deleted is what was checked, whatever changed at ``target`` meanwhile; if it says no, the old folder is
    put back and :class:`NotReplaceable` raised (``new`` is left for the caller to remove)."""
    if not target.exists() and not target.is_symlink():
        os.rename(new, target)
        return
    if _exchange(new, target):
        if replaceable is not None and not replaceable(new):  # ``new`` now holds the old folder
            _exchange(new, target)
            raise NotReplaceable(f"{target} changed into something that is not replaced; it was put back")
        shutil.rmtree(new)
        return
    aside = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, aside)
    if replaceable is not None and not replaceable(aside):
        os.rename(aside, target)
        raise NotReplaceable(f"{target} changed into something that is not replaced; it was put back")
    os.rename(new, target)
    shutil.rmtree(aside)
