"""What every command-line tool of the package needs: one way to turn the package's errors into a message
and an exit code, the allocator setting of the console scripts, and ``KEY=VALUE`` model arguments.
(The device and the autocast precision are the machine's: :mod:`.hardware`.)"""

from __future__ import annotations

import sys
from typing import Any, Optional

from .errors import (
    EXIT_BUSY,
    EXIT_INTEGRITY,
    EXIT_NONFINITE,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ResmgError,
    UsageError,
)

__all__ = [
    "EXIT_BUSY",
    "EXIT_INTEGRITY",
    "EXIT_NONFINITE",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "PRECISION_HELP",
    "add_precision_argument",
    "parse_model_kwargs",
    "parse_value",
    "report_error",
    "shown_text",
]


PRECISION_HELP = (
    "bf16 = autocast; auto: bf16 where it is measured faster here (CUDA, a CPU whose bf16 matmuls beat fp32 "
    "ones), else fp32 — the output says which and why"
)


def add_precision_argument(parser: Any, default: Optional[str] = "auto", note: str = "") -> None:
    """The one ``--precision`` flag of every command (``default=None``: a command that must tell "not
    given" from ``auto``, as a resumed training run does); ``note`` is appended to its help."""
    from .hardware import PRECISIONS

    help_text = f"{PRECISION_HELP}{note} (default: {default})"
    parser.add_argument("--precision", default=default, choices=PRECISIONS, help=help_text)


def report_error(err: ResmgError) -> int:
    """Print ``err`` as the one line ``error: ...`` on stderr; return its kind's exit code."""
    print(f"error: {err}", file=sys.stderr)
    return err.exit_code


def parse_value(text: str) -> Any:
    """``"3"`` → 3, ``"0.5"`` → 0.5, ``"true"`` → True, ``"none"`` → None, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_model_kwargs(items: Optional[list[str]]) -> dict[str, Any]:
    """``--model-kwargs widths=16,32,64,128 share=A`` as a dict (values through :func:`parse_value`)."""
    kwargs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--model-kwargs takes key=value pairs, got {item!r}")
        kwargs[key] = parse_value(value)
    return kwargs


def shown_text(value: Any, limit: int) -> str:
    """Text read from a file (a class name, a record's string) as it may be shown to a person, in a picture or a
    model card: one line, every character that is not printable (control characters, bidirectional overrides)
    replaced by U+FFFD, at most ``limit`` characters (cut with an ellipsis)."""
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in " ".join(str(value).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"
