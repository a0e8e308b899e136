"""The errors the package raises on purpose, by what happened, and the exit code a command gives each.

Every one derives from :class:`ResmgError`, so a caller can catch the package's own errors at once;
each kind also derives from the standard exception a Python user would reach for:

- :class:`UsageError` (a ``ValueError``): input the user can change — a flag, a file, a value. Exit 2.
- :class:`IntegrityError` (not a ``ValueError``): bytes that are not what was published or recorded —
  a sha256 that differs, a truncated or foreign weights file, a file outside the folder that names it.
  Exit 4.
- :class:`UnavailableError` (an ``OSError``): something outside the process cannot be had now — the Hub
  unreachable or refusing, weights not in an offline cache. ``except OSError`` catches "offline". Exit 5.
- :class:`BusyError` (an ``OSError``): another process holds the lock of what this one would write. Exit 6.
- :class:`NonFiniteLoss` (a ``RuntimeError``): training's loss became NaN/inf; the run stopped and its last
  good checkpoint is kept. Exit 3.

A command catches :class:`ResmgError` alone (:func:`resmg_zoo.core.cli.report_error`): any other exception
is a bug of ours (or of a library) and keeps its traceback and exit code 1.
"""

from __future__ import annotations

from pathlib import Path

EXIT_USAGE = 2  # a clear error about the input (argparse's own code for bad arguments)
EXIT_NONFINITE = 3  # training stopped on a NaN/inf loss; the last good checkpoint is kept
EXIT_INTEGRITY = 4
EXIT_UNAVAILABLE = 5
EXIT_BUSY = 6


class ResmgError(Exception):
    """An error the package raises on purpose; ``exit_code`` is what a command exits with."""

    exit_code = 1


class UsageError(ResmgError, ValueError):
    """Input the user can fix; the message names the flag, file or value and the fix."""

    exit_code = EXIT_USAGE


class IntegrityError(ResmgError):
    """Bytes that are not the ones published or recorded; the message names the file and both digests."""

    exit_code = EXIT_INTEGRITY


class UnavailableError(ResmgError, OSError):
    """A resource outside the process cannot be reached or read now (the Hub, an offline cache)."""

    exit_code = EXIT_UNAVAILABLE


class BusyError(ResmgError, OSError):
    """Another process holds the lock on what this one would write; the message names the lock."""

    exit_code = EXIT_BUSY


class NonFiniteLoss(ResmgError, RuntimeError):
    """The loss became NaN/inf: training stops and the last good checkpoint is kept; the message
    names the epoch, the step, the run folder and the fix."""

    exit_code = EXIT_NONFINITE

    def __init__(self, epoch: int, step: int, run_dir: Path) -> None:
        super().__init__(
            f"non-finite loss at epoch {epoch + 1}, step {step + 1}: training stopped. The last good checkpoint "
            f"in {run_dir} is kept; lower --lr or use --precision fp32, then --resume."
        )
