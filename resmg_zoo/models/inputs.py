"""The input check every model runs before its stem (SPEC §6): a clear ``ValueError``, TorchScript-safe."""

from __future__ import annotations

from torch import Tensor


def check_image_batch(x: Tensor, in_chans: int, min_size: int) -> None:
    """Raise ``ValueError`` unless ``x`` is (batch, ``in_chans``, H, W) with H, W ≥ ``min_size``.

    ``min_size`` is one pixel per level after the stride-2 transfers: 2^(J-1) for J levels.
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
