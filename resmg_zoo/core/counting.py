"""Parameter counts computed from the built models (on the meta device: no memory, no init cost)."""

from __future__ import annotations

from functools import cache
from typing import Any

import timm
import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameter elements (a shared tensor counts once)."""
    return sum(p.numel() for p in model.parameters())


def param_count(name: str, **kwargs: Any) -> int:
    """Parameters of ``timm.create_model(name, **kwargs)``, built on the meta device (cached; list
    arguments such as ``widths=[8, 16]`` are cached as tuples)."""
    return _param_count(name, tuple(sorted((k, _frozen(v)) for k, v in kwargs.items())))


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


@cache
def _param_count(name: str, kwargs: tuple[tuple[str, Any], ...]) -> int:
    with torch.device("meta"):
        model = timm.create_model(name, **dict(kwargs))
    return count_parameters(model)
