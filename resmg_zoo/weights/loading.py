"""The one way a safetensors state dict goes into a model of the zoo, and the check that it fits.

Used for run checkpoints (exactly), fine-tuning starts (a new head, an adapted stem) and, as
timm's ``pretrained_filter_fn``, for published weights (timm's ``load_pretrained`` then adapts the
head and stem itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from ..core.errors import IntegrityError, UsageError
from ..core.hashing import read_with_sha256


class WeightsIntegrityError(IntegrityError):
    """A weights file whose bytes are not the published or recorded ones (sha256), or not a readable
    safetensors file at all."""


class WeightsMismatchError(UsageError):
    """Weights that are intact but do not fit the model asked for (other widths, classes, keys)."""


def fit_state_dict(
    state: dict[str, torch.Tensor],
    model: nn.Module,
    where: str,
    strict: bool = False,
    adapt: bool = False,
    drop_head: bool = False,
) -> dict[str, Any]:
    """Check that ``state`` fits ``model``: every key present, with its shape.

    ``strict``: exactly so (a run's own checkpoint). Otherwise (a fine-tuning start, published
    weights) a head for another class count (or any head, with ``drop_head``) and a stem for other
    input channels are allowed. Anything else missing, unexpected or misshapen raises
    :class:`WeightsMismatchError` naming ``where``, the tensors and their shapes. With ``adapt``
    the head keys are removed and the stem adapted here (timm's ``adapt_input_conv``); without it
    (timm's ``pretrained_filter_fn``) timm's ``load_pretrained`` does both after this check.
    Returns ``new_head`` (the head keys not taken) and ``stem_adapted``.
    """
    from timm.models import adapt_input_conv

    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier, first_conv = cfg.get("classifier") or "fc", cfg.get("first_conv") or "conv1"
    target = model.state_dict()
    head = (f"{classifier}.weight", f"{classifier}.bias")
    new_head = (
        []
        if strict
        else [k for k in head if k in state and (drop_head or k not in target or state[k].shape != target[k].shape)]
    )
    stem = f"{first_conv}.weight"
    stem_adapted = (
        not strict
        and stem in state
        and stem in target
        and state[stem].shape[1] != target[stem].shape[1]
        and (state[stem].shape[0], *state[stem].shape[2:]) == (target[stem].shape[0], *target[stem].shape[2:])
    )
    missing = [k for k in target if k not in state and not (k in head and (new_head or drop_head))]
    unexpected = sorted(k for k in state if k not in target and k not in new_head)
    wrong = [  # in the model's own order (a file's tensors come in no fixed order)
        f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        for k in target
        if k in state and k not in new_head and not (k == stem and stem_adapted) and state[k].shape != target[k].shape
    ]
    if missing or unexpected or wrong:
        raise WeightsMismatchError(
            f"{where} does not fit the model: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, "
            f"wrong shapes (file vs model) {wrong[:5]}{_architecture_hint(state, target)}"
        )
    if adapt:
        for key in new_head:
            state.pop(key)
        if stem_adapted:
            state[stem] = adapt_input_conv(target[stem].shape[1], state[stem], base_chans=state[stem].shape[1])
    return dict(new_head=new_head, stem_adapted=stem_adapted)


def read_state_dict(path: Path, where: str = "", sha256: Optional[str] = None) -> dict[str, torch.Tensor]:
    """The safetensors state dict at ``path``, parsed from the bytes whose sha256 was checked against
    ``sha256`` (when given) in the same read: what is loaded is what was verified."""
    return read_verified(path, where, sha256)[0]


def read_verified(path: Path, where: str = "", sha256: Optional[str] = None) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of the safetensors file at ``path`` and the sha256 of the bytes they were parsed from,
    from one read; with ``sha256`` those bytes must have it (:class:`WeightsIntegrityError` otherwise)."""
    where = where or str(path)
    try:
        data, actual = read_with_sha256(path)
    except OSError as err:  # missing, a folder, no permission: the file is not the problem
        raise UsageError(f"{where}: {path} cannot be opened: {err.strerror or err}") from None
    if sha256 is not None and actual != sha256:
        raise WeightsIntegrityError(
            f"{where}: {path} has sha256 {actual} ({len(data):,} bytes), not the recorded {sha256}: "
            "the file is corrupt, truncated or was replaced"
        )
    return parse_state_dict(data, f"{where}: {path}"), actual


def parse_state_dict(data: bytes, where: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file's bytes; :class:`WeightsIntegrityError` naming ``where`` if they
    are not one (truncated, foreign, or a tensor of a dtype torch has no type for)."""
    try:
        return load_safetensors(data)
    except (SafetensorError, RuntimeError) as err:  # a truncated or foreign file; torch refusing a header's shape
        raise WeightsIntegrityError(f"{where} is not a readable safetensors file: {str(err)[:300]}") from None
    except KeyError as err:  # safetensors.torch's table of dtypes lacks the header's (e.g. F4, F8_E8M0)
        raise WeightsIntegrityError(
            f"{where} is not a readable safetensors file: a tensor has the dtype {err}, which torch cannot load"
        ) from None


def load_weights(
    model: nn.Module,
    path: Path,
    where: str = "",
    strict: bool = True,
    drop_head: bool = False,
    sha256: Optional[str] = None,
) -> dict[str, Any]:
    """Load the safetensors state dict at ``path`` into ``model`` (see :func:`fit_state_dict`):
    exactly (``strict``, a run's checkpoint), or as a fine-tuning start with a new head where the
    class count differs (or ``drop_head``) and a stem adapted to other input channels. With
    ``sha256`` the bytes loaded are the bytes checked (:func:`read_state_dict`)."""
    where = where or str(path)
    return load_state(model, read_state_dict(path, where, sha256), where, strict=strict, drop_head=drop_head)


def load_state(
    model: nn.Module, state: dict[str, torch.Tensor], where: str, strict: bool = True, drop_head: bool = False
) -> dict[str, Any]:
    """Load tensors already read (and verified) into ``model`` as :func:`load_weights` loads a file's;
    ``state`` itself is left as it was (the head dropped and the stem adapted on a copy)."""
    state = dict(state)
    report = fit_state_dict(state, model, where, strict=strict, adapt=True, drop_head=drop_head)
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    return report


def level_architecture(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """The ``widths`` and ``layers`` a zoo state dict was saved from (``stages.<level>.<blocks|smoothers>.<i>``),
    as ``--model-kwargs`` values; empty where the keys are not a zoo model's."""
    widths: dict[int, int] = {}
    depths: dict[int, set[int]] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if len(parts) < 3 or parts[0] != "stages" or not parts[1].isdigit():
            continue
        level = int(parts[1])
        if tensor.dim() == 4:
            widths[level] = max(widths.get(level, 0), tensor.shape[0])
        if parts[2] in ("blocks", "smoothers") and len(parts) > 3 and parts[3].isdigit():
            depths.setdefault(level, set()).add(int(parts[3]))
    levels = sorted(widths)
    if not levels or levels != list(range(len(levels))):
        return {}
    found = {"widths": ",".join(str(widths[i]) for i in levels)}
    if sorted(depths) == levels:
        found["layers"] = ",".join(str(len(depths[i])) for i in levels)
    return found


def _architecture_hint(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> str:
    """`` — the file has widths=…`` where the file's levels differ from the model's."""
    saved, built = level_architecture(state), level_architecture(target)
    differs = {k: v for k, v in saved.items() if built.get(k) != v}
    if not differs:
        return ""
    args = " ".join(f"{k}={v}" for k, v in differs.items())
    return (
        f". The file was saved from a model with {args} (this one has "
        f"{' '.join(f'{k}={built.get(k)}' for k in differs)}): pass --model-kwargs {args} "
        f"(create_model(..., {', '.join(f'{k}={v!r}' for k, v in differs.items())}) from Python)"
    )
