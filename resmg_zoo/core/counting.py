"""Parameter counts computed from the built models (on the meta device: no memory, no init cost)."""

from __future__ import annotations

from functools import cache
from typing import Any, Optional

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
    :data:`MODEL_ARGS` in their ranges (:func:`model_args_problem`): the checks that let a caller build from
    stored arguments without catching the ``TypeError`` or ``RuntimeError`` of a bug."""
    if not timm.is_model(name):
        raise ModelArgsError(f"no registered model is called {name!r}")
    problem = model_args_problem(args)
    if problem:
        raise ModelArgsError(problem)


def model_args_problem(args: dict[str, Any]) -> Optional[str]:
    """What is wrong with stored ``model_args`` (``None``: nothing): a keyword the zoo's models do not take
    (loading options such as ``pretrained`` or ``checkpoint_path`` included), or a value out of its range —
    checked before anything is built, so that no stored value builds a giant or trips a model's assertion."""
    unknown = sorted(set(args) - MODEL_ARGS)
    if unknown:
        return f"model_args {unknown} are not arguments of the zoo's models ({', '.join(sorted(MODEL_ARGS))})"
    for key, value in args.items():
        if not _value_fits(key, value):
            return f"model_args {key}={value!r} is out of range: {VALUE_RULES[key]}"
    return None


VALUE_RULES = {
    "num_classes": "an integer from 1 to 100,000",
    "in_chans": "an integer from 1 to 16",
    "widths": "1 to 8 integers from 1 to 4,096",
    "layers": "1 to 8 integers from 1 to 64",
    "global_pool": "one of avg, max, avgmax, catavgmax",
    "drop_rate": "a number from 0 to below 1",
    "share_b": "true or false",
    **{k: "a short name" for k in ("share", "pool_block", "a_form", "b_form", "transfer_norm")},
}


def _ints(value: Any, top: int) -> bool:
    items = value.replace(" ", "").split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not 1 <= len(items) <= 8:
        return False
    try:
        return all(type(v) is not bool and 1 <= int(v) <= top and float(v) == int(v) for v in items)
    except (TypeError, ValueError):
        return False


def _value_fits(key: str, value: Any) -> bool:
    """Whether ``value`` is in the range :data:`VALUE_RULES` gives ``key`` (the model's own constructor then
    checks the names and the widths against the layers, with a :class:`UsageError` of its own)."""
    if key in ("num_classes", "in_chans"):
        return type(value) is int and 1 <= value <= (100_000 if key == "num_classes" else 16)
    if key in ("widths", "layers"):
        return _ints(value, 4096 if key == "widths" else 64)
    if key == "global_pool":
        return value in ("avg", "max", "avgmax", "catavgmax")
    if key == "drop_rate":
        return type(value) in (int, float) and 0 <= value < 1
    if key == "share_b":
        return type(value) is bool
    return isinstance(value, str) and 0 < len(value) <= 32


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
