"""The one kind of error a command-line tool reports as the user's to fix.

:class:`UsageError` (a ``ValueError``, so Python callers can catch it as one) is raised for input the
user can change — a flag, a file, a value — with one message that names it and says what would work.
Every tool's ``main`` catches ``UsageError`` alone and turns it into that message and exit code 2: any
other exception is a bug of ours (or of a library), and keeps its traceback and exit code 1. The
domain errors of the package (a damaged dataset, a run folder that is not one, weights whose sha256
differs, ...) are ``UsageError`` subclasses.
"""

from __future__ import annotations

EXIT_USAGE = 2  # a clear error about the input (argparse's own code for bad arguments)


class UsageError(ValueError):
    """Input the user can fix; the message names the flag, file or value and the fix."""
