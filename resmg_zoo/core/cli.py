"""What every command-line tool of the package needs: exit codes, ``KEY=VALUE`` model arguments,
the device and the autocast precision."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Optional

import torch

from .errors import EXIT_USAGE, UsageError

__all__ = ["EXIT_NONFINITE", "EXIT_USAGE", "autocast_context", "parse_model_kwargs", "parse_value", "pick_device"]

EXIT_NONFINITE = 3  # training stopped on a NaN/inf loss; the last good checkpoint is kept


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


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else the CPU), ``cpu`` or ``cuda[:N]``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_context(precision: str, device: torch.device) -> Any:
    """bf16 autocast on ``device`` for ``precision="bf16"``; nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()
