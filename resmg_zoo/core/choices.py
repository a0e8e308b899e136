"""Validation of options: an unknown value names every valid choice, a list of sizes is checked (contract §6)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Union

from .errors import UsageError


def check_choice(option: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise ``ValueError`` listing them all.

    The message also names the closest valid spellings, so ``share='a'`` suggests ``'A'``.
    """
    choices = tuple(choices)
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), choices, n=3, cutoff=0.5)
    close += [c for c in choices if c.lower() == str(value).lower() and c not in close]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UsageError(f"unknown {option} {value!r}; valid choices are {', '.join(repr(c) for c in choices)}.{hint}")


def parse_ints(name: str, value: Union[str, Sequence[int]]) -> tuple[int, ...]:
    """Accept ``(64, 128)`` or the command-line spelling ``"64,128"``."""
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        parsed = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a sequence of positive integers, got {value!r}") from None
    if not parsed or any(v < 1 for v in parsed):
        raise UsageError(f"{name} must be a sequence of positive integers, got {value!r}")
    return parsed
