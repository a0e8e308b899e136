"""The one kind of error a command-line tool reports as the user's to fix.

:class:`UsageError` (a ``ValueError``, so Python callers can catch it as one) is raised for input the
user can change — a flag, a file, a value — with one message that names it and says what would work.
Every tool's ``main`` turns a ``UsageError`` into that message and exit code 2, and nothing else: any
other exception is a bug of ours (or of a library), and keeps its traceback and exit code 1. The
domain errors of the package (a damaged dataset, a run folder that is not one, weights whose sha256
differs, ...) are ``UsageError`` subclasses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Optional

EXIT_USAGE = 2  # a clear error about the input (argparse's own code for bad arguments)


class UsageError(ValueError):
    """Input the user can fix; the message names the flag, file or value and the fix."""


def run_tool(body: Callable[[], Optional[int]]) -> int:
    """Run a tool's body: ``0`` (or what it returns), or :data:`EXIT_USAGE` with ``error: …`` on stderr
    for a :class:`UsageError`. Every other exception propagates with its traceback."""
    try:
        code = body()
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return 0 if code is None else code
