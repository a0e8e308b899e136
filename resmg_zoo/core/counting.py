"""Parameter counts computed from the built models (on the meta device: no memory, no init cost)."""

from __future__ import annotations

from functools import cache
from typing import Any

import timm
import torch
from torch import nn

from .errors import UsageError

# What a published entry's ``model_args`` may hold: the keywords of the zoo's model families
# (``ResMgResNet``, ``FResNet``) that shape what the weights fit, beside timm's usual ones.
MODEL_ARGS = frozenset(
    {"layers", "widths", "share", "pool_block", "a_form", "b_form", "share_b", "transfer_norm"}
    | {"in_chans", "num_classes", "global_pool", "drop_rate"}
)


class ModelArgsError(UsageError):
    """``model_args`` that name no zoo model or keywords it does not take."""


def check_model_args(name: str, args: dict[str, Any]) -> None:
    """Raise :class:`ModelArgsError` unless ``name`` is a registered model and ``args`` only keywords of
    :data:`MODEL_ARGS`: the checks that let a caller build from stored arguments without catching the
    ``TypeError`` or ``RuntimeError`` of a bug."""
    if not timm.is_model(name):
        raise ModelArgsError(f"no registered model is called {name!r}")
    unknown = sorted(set(args) - MODEL_ARGS)
    if unknown:
        raise ModelArgsError(f"model_args {unknown} are not arguments of the zoo's models ({sorted(MODEL_ARGS)})")


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


def checkpoint_bytes(model: nn.Module) -> int:
    """Size of ``model``'s state dict written as a safetensors file (shared tensors once)."""
    from safetensors.torch import save

    return len(save({k: v.contiguous() for k, v in model.state_dict().items()}))
