"""The input check every model runs before its stem (docs/contract.md §6): a clear ``ValueError``, TorchScript-safe.

No ``from __future__ import annotations`` in the model modules: ``torch.fx`` copies a forward's
annotations into the code of a traced graph, and TorchScript cannot read them as strings.
"""

import torch
from torch import Tensor


def check_image_batch(x: Tensor, in_chans: int, min_size: int) -> Tensor:
    """Return ``x`` unless it is not a floating-point (batch, ``in_chans``, H, W) tensor with
    H, W ≥ ``min_size``; then raise ``ValueError`` saying what was expected and what came.

    ``min_size`` is one pixel per level after the stride-2 transfers: 2^(J-1) for J levels.
    The batch is returned so that a traced graph keeps the check as a node on the data path
    (``torch.fx`` records this function as one call: see :mod:`resmg_zoo.models.base`).
    (Strings are joined by ``+`` so that the function compiles under ``torch.jit.script``.)
    """
    if x.dim() != 4:
        raise ValueError(
            "expected a 4-D input (batch, channels, height, width), got a "
            + str(x.dim())
            + "-D tensor of shape "
            + str(list(x.shape))
        )
    if x.shape[1] != in_chans:
        raise ValueError(
            "expected "
            + str(in_chans)
            + " input channels, got "
            + str(x.shape[1])
            + " (input shape "
            + str(list(x.shape))
            + ")"
        )
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            "expected an image of at least "
            + str(min_size)
            + "x"
            + str(min_size)
            + " pixels (one per level after the poolings), got "
            + str(x.shape[2])
            + "x"
            + str(x.shape[3])
        )
    if not x.is_floating_point():
        dtype = "an integer or bool dtype" if torch.jit.is_scripting() else "dtype " + str(x.dtype)
        raise ValueError(
            "expected a floating-point image batch, got "
            + dtype
            + ": scale it to [0, 1] and normalise with the model's pretrained_cfg mean and std"
            + " (timm.data.resolve_data_config + create_transform do both)"
        )
    return x
