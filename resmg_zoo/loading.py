"""The one way a safetensors state dict goes into a model of the zoo, and the check that it fits.

Used for published weights (as timm's ``pretrained_filter_fn``: timm's ``load_pretrained`` then
adapts the head and stem itself), for fine-tuning starts and for run checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn


class WeightsIntegrityError(RuntimeError):
    """A weights file whose sha256 or contents do not match what was published or what the model needs."""


def fit_state_dict(
    state: dict[str, torch.Tensor],
    model: nn.Module,
    where: str,
    adapt: bool = False,
    drop_head: bool = False,
) -> dict[str, Any]:
    """Check that ``state`` fits ``model`` as a fine-tuning start: every key present with its shape,
    except a head for another class count (or ``drop_head``) and a stem for other input channels.

    Any other missing, unexpected or misshapen key raises :class:`WeightsIntegrityError` naming
    ``where``. With ``adapt`` the head keys are removed and the stem adapted here (timm's
    ``adapt_input_conv``); without it (timm's ``pretrained_filter_fn``) timm's ``load_pretrained``
    does both after this check. Returns ``new_head`` (the head keys not taken) and ``stem_adapted``.
    """
    from timm.models import adapt_input_conv

    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier, first_conv = cfg.get("classifier") or "fc", cfg.get("first_conv") or "conv1"
    target = model.state_dict()
    head = (f"{classifier}.weight", f"{classifier}.bias")
    new_head = [k for k in head if k in state and (drop_head or k not in target or state[k].shape != target[k].shape)]
    stem = f"{first_conv}.weight"
    stem_adapted = (
        stem in state
        and stem in target
        and state[stem].shape[1] != target[stem].shape[1]
        and (state[stem].shape[0], *state[stem].shape[2:]) == (target[stem].shape[0], *target[stem].shape[2:])
    )
    missing = [k for k in target if k not in state and not (k in head and (new_head or drop_head))]
    unexpected = [k for k in state if k not in target and k not in new_head]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        for k in state
        if k in target and k not in new_head and not (k == stem and stem_adapted) and state[k].shape != target[k].shape
    ]
    if missing or unexpected or wrong:
        raise WeightsIntegrityError(
            f"{where} does not fit the model: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, "
            f"wrong shapes (file vs model) {wrong[:5]}"
        )
    if adapt:
        for key in new_head:
            state.pop(key)
        if stem_adapted:
            state[stem] = adapt_input_conv(target[stem].shape[1], state[stem], base_chans=state[stem].shape[1])
    return dict(new_head=new_head, stem_adapted=stem_adapted)


def load_weights_file(model: nn.Module, path: Path, where: str, drop_head: bool = False) -> dict[str, Any]:
    """Load a safetensors state dict into ``model`` as a fine-tuning start (:func:`fit_state_dict`
    with ``adapt``): a head of another size is left new, a stem for other channels is adapted."""
    try:
        state = load_file(str(path))
    except Exception as err:
        raise WeightsIntegrityError(f"{where}: {path} is not a readable safetensors file: {err}") from None
    report = fit_state_dict(state, model, where, adapt=True, drop_head=drop_head)
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    return report
