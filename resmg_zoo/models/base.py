"""The base of both model families: a stem, resolution levels (``stages``), and timm's head API
around them, with the input check of docs/contract.md §6."""

from collections.abc import Iterator, Sequence
from typing import Optional, Union

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import create_classifier, register_notrace_function
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from ..core.choices import parse_ints
from ..core.errors import UsageError
from .inputs import check_image_batch

# The input check is one opaque call for torch.fx (any tracer: ``wrap`` patches this module's name)
# and for timm's FX feature extraction: it stays in a traced graph, and runs, as a node on x's path.
torch.fx.wrap("check_image_batch")
register_notrace_function(check_image_batch)


class LevelNetwork(nn.Module):
    """A network of resolution levels: ``stages`` (the levels ℓ = 1..J), then a pool + linear head
    with timm's head methods (``forward_head``, ``reset_classifier``, ``set_grad_checkpointing``…).

    A subclass calls :meth:`init_common` first, sets ``num_features``, ``stages`` and ``norm`` (the
    final norm, or an identity), calls :meth:`init_head`, and defines ``forward_features`` and
    :meth:`iterate_levels`, from which timm's ``forward_intermediates`` and
    ``prune_intermediate_layers`` follow.
    """

    # (no class-level annotations: TorchScript would read them as attribute types)

    def init_common(
        self,
        widths: Union[Sequence[int], str],
        layers: Union[Sequence[int], str],
        in_chans: int,
        num_classes: int,
        drop_rate: float,
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Check and set what every model has; returns the parsed ``widths`` and ``layers``."""
        widths, layers = parse_ints("widths", widths), parse_ints("layers", layers)
        if len(widths) != len(layers):
            raise UsageError(f"widths {widths} and layers {layers} must name the same number of levels")
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

    def check_input(self, x: Tensor) -> Tensor:
        """``x``, or a ``ValueError`` for an input the model cannot classify (docs/contract.md §6)."""
        return check_image_batch(x, self.in_chans, self.min_input_size)

    def stem(self, x: Tensor) -> Tensor:
        """``fin(f)`` (F-ResNet: ``f_1 = fin(f)``), the data's first feature map: ``conv1``, ``bn1``, ``act1``
        of the subclass, after the input check."""
        if not torch.jit.is_tracing():
            x = self.check_input(x)
        return self.act1(self.bn1(self.conv1(x)))

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def iterate_levels(self, x: Tensor, levels: nn.Module) -> Iterator[Tensor]:
        """Yield the stem's output, then the feature of each of ``levels`` (a prefix of ``stages``)."""
        raise NotImplementedError

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: Tensor,
        indices: Optional[Union[int, list[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[list[Tensor], tuple[Tensor, list[Tensor]]]:
        """timm's feature API: index 0 is the stem's output, index ℓ the feature of level ℓ = 1..J
        (what :meth:`iterate_levels` yields), with timm's semantics.

        Args:
            x: image batch.
            indices: the last n features for an int, all for ``None``, else these indices (negative from the end).
            norm: apply the final ``norm`` to the level-J feature, as ``forward_features`` does.
            stop_early: run no level after the last wanted feature.
            output_fmt: ``NCHW`` only.
            intermediates_only: return the features alone.

        Returns:
            ``(forward_features(x), features)`` (the last feature computed, when stopped early), or the features.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"{type(self).__name__} features are NCHW only, got output_fmt={output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        last = len(self.stages)
        levels = self.stages[:max_index] if stop_early else self.stages
        intermediates, feature, index = [], x, -1
        for index, feature in enumerate(self.iterate_levels(x, levels)):
            if index in take_indices:
                intermediates.append(self.norm(feature) if norm and index == last else feature)
        if intermediates_only:
            return intermediates
        return (self.norm(feature) if index == last else feature), intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: Union[int, list[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the levels after the last wanted feature, the final norm and the head, as timm's getter
        feature class asks; returns the absolute indices kept."""
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        prune_end = max_index < len(self.stages)
        self.stages = self.stages[:max_index]
        if prune_norm or prune_end:
            self.norm = nn.Identity()  # sized for (and applied to) level J only
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
