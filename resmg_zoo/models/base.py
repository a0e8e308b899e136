"""The base of both model families: a stem, resolution levels (``stages``), and timm's head API
around them, with the input check of SPEC §6."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import create_classifier
from torch import Tensor, nn

from ..core.choices import parse_ints
from .inputs import check_image_batch


class LevelNetwork(nn.Module):
    """A network of resolution levels: ``stages`` (the levels ℓ = 1..J), then a pool + linear head
    with timm's head methods (``forward_head``, ``reset_classifier``, ``set_grad_checkpointing``…).

    A subclass calls :meth:`init_common` first, sets ``num_features`` and ``stages``, calls
    :meth:`init_head`, and defines ``forward_features``.
    """

    # (no class-level annotations: TorchScript would read them as attribute types)

    def init_common(
        self,
        widths: Sequence[int] | str,
        layers: Sequence[int] | str,
        in_chans: int,
        num_classes: int,
        drop_rate: float,
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Check and set what every model has; returns the parsed ``widths`` and ``layers``."""
        widths, layers = parse_ints("widths", widths), parse_ints("layers", layers)
        if len(widths) != len(layers):
            raise ValueError(f"widths {widths} and layers {layers} must name the same number of levels")
        if in_chans < 1:
            raise ValueError(f"in_chans must be at least 1, got {in_chans}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.min_input_size = 2 ** (len(widths) - 1)  # one pixel per level after the stride-2 transfers
        return widths, layers

    def init_head(self, num_classes: int, global_pool: str) -> None:
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (per level)."""
        for level in self.stages:
            level.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new head for ``num_classes`` (0: none); ``global_pool=''`` keeps the feature map."""
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.init_head(num_classes, global_pool)

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` for an input the model cannot classify (SPEC §6)."""
        check_image_batch(x, self.in_chans, self.min_input_size)

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
