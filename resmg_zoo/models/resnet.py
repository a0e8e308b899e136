"""ResNet and pre-act ResNet with the operator sharing of the constrained data-feature mapping.

Algorithm 1 of the paper with J = 4 levels: a stem ``fin``, per level ℓ the blocks
r_{ℓ,i} (eq. (2.1)/(2.3)), a pooling block between levels (eq. (2.2)/(2.4)), average pooling and a
linear head. ``share`` constrains the operators of a level (§3.2, §5.3):

* ``none``: ResNet-A_{ℓ,i}-B_{ℓ,i}, the classic model;
* ``A``:   ResNet-A_ℓ-B_{ℓ,i}, ONE data-feature map A_ℓ per level, eq. (3.11)/(3.12) — the
  pooling block's Ã_{ℓ+1} = A_{ℓ+1} too (eq. (3.16));
* ``B``:   ResNet-A_{ℓ,i}-B_ℓ, ONE B_ℓ per level for i = 1..ν_ℓ (eq. (5.1)); the strided B̃_{ℓ,0}
  of the pooling block keeps its own weights;
* ``AB``:  ResNet-A_ℓ-B_ℓ (eq. (5.2)).

Each shared operator is a convolution owned once by its level (``stages.N.shared_a`` /
``stages.N.shared_b``); BatchNorm is never shared.
"""

from collections.abc import Iterator, Sequence
from typing import Any, Optional

import torch
from timm.layers import BatchNormAct2d
from timm.models import register_model
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..core.choices import check_choice
from .base import LevelNetwork
from .blocks import PostActBlock, PreActBlock, conv3x3, init_weights
from .builder import build_zoo_model, tagged_cfgs
from .variants import VARIANTS, ResNetVariant, documented

SHARE_CHOICES: tuple[str, ...] = ("none", "A", "B", "AB")
"""Operator sharing of §3.2/§5.3: none, the data-feature map A_ℓ, the smoother B_ℓ, or both."""

POOL_BLOCK_CHOICES: tuple[str, ...] = ("conv", "restrict")
"""Pooling-block forms of §3.3: eq. (3.14) with a strided B̃ (``conv``) or the restriction
R∗2 followed by the level's own block, r_{ℓ+1,1} of eq. (3.17) (``restrict``)."""


class ResMgLevel(nn.Module):
    """One resolution level ℓ: its blocks and, when shared, its single A_ℓ and/or B_ℓ.

    The first block is the pooling block when ``stride == 2`` (levels 2..J).

    Args:
        in_chs: channels entering the level.
        out_chs: channels of the level.
        depth: number of blocks ν_ℓ (the pooling block included).
        stride: 1 for the first level, 2 for the others.
        preact: pre-act blocks (eq. (2.1)) instead of post-act blocks (eq. (2.3)).
        share: one of ``none``, ``A``, ``B``, ``AB``.
        pool_block: ``conv`` (eq. (3.14)) or ``restrict`` (eq. (3.17)).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        stride: int,
        preact: bool,
        share: str = "none",
        pool_block: str = "conv",
    ) -> None:
        super().__init__()
        share = check_choice("share", share, SHARE_CHOICES)
        pool_block = check_choice("pool_block", pool_block, POOL_BLOCK_CHOICES)
        if depth < 1:
            raise ValueError(f"a level needs at least one block, got depth={depth}")
        share_a, share_b = "A" in share, "B" in share
        block_cls = PreActBlock if preact else PostActBlock

        blocks = []
        b_users = 0
        for i in range(depth):
            pooling = i == 0 and (stride != 1 or in_chs != out_chs)
            # A strided B̃_{ℓ,0} keeps its own weights; in the restrict form the pooling block
            # runs at the level's resolution and uses the level's B_ℓ like every other block.
            shares_b = share_b and (not pooling or pool_block == "restrict")
            b_users += int(shares_b)
            blocks.append(
                block_cls(
                    in_chs if i == 0 else out_chs,
                    out_chs,
                    stride=stride if i == 0 else 1,
                    own_a=not share_a,
                    own_b=not shares_b,
                    pool_block=pool_block,
                )
            )
        self.shared_a: Optional[nn.Conv2d] = conv3x3(out_chs, out_chs) if share_a else None
        self.shared_b: Optional[nn.Conv2d] = conv3x3(out_chs, out_chs) if b_users > 0 else None
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        shared_a: Optional[Tensor] = None
        shared_b: Optional[Tensor] = None
        if self.shared_a is not None:
            shared_a = self.shared_a.weight
        if self.shared_b is not None:
            shared_b = self.shared_b.weight
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x, shared_a, shared_b, use_reentrant=False)
            else:
                x = block(x, shared_a, shared_b)
        return x


class ResMgResNet(LevelNetwork):
    """(Pre-act) ResNet of Algorithm 1 with operator sharing per level (§3.2, §5.3).

    Post-act (``preact=False``): stem ``fin(f) = σ(BN(θ0 ∗ f))``, blocks eq. (2.3)/(3.12).
    Pre-act (``preact=True``): stem ``fin(f) = σ(θ0 ∗ f)`` (§2, CIFAR), blocks eq. (2.1)/(3.11),
    and a final BN-ReLU before the average pool. The stem is 3×3 stride 1 with no max-pool
    (CIFAR/MNIST style), so the levels run at reductions 1, 2, 4, 8.

    Args:
        layers: blocks per level, e.g. (2, 2, 2, 2) for depth 18, (3, 4, 6, 3) for depth 34.
        preact: pre-activation blocks.
        share: ``none``, ``A``, ``B`` or ``AB`` (which operators are one per level).
        pool_block: ``conv`` (the paper's default) or ``restrict``.
        widths: channels per level.
        in_chans: image channels.
        num_classes: classes of the head (0 for none).
        global_pool: timm pool type (``avg`` is the paper's R_ave; ``''`` keeps the feature map).
        drop_rate: dropout before the head (the paper uses none).
    """

    def __init__(
        self,
        layers: Sequence[int] = (2, 2, 2, 2),
        preact: bool = False,
        share: str = "none",
        pool_block: str = "conv",
        widths: Sequence[int] = (64, 128, 256, 512),
        in_chans: int = 3,
        num_classes: int = 10,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        widths, layers = self.init_common(widths, layers, in_chans, num_classes, drop_rate)
        self.share = check_choice("share", share, SHARE_CHOICES)
        self.pool_block = check_choice("pool_block", pool_block, POOL_BLOCK_CHOICES)
        self.preact = preact

        self.conv1 = conv3x3(in_chans, widths[0])
        self.bn1 = nn.Identity() if preact else nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module="act1")]

        in_chs, reduction, levels = widths[0], 1, []
        for i, (width, depth) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            levels.append(ResMgLevel(in_chs, width, depth, stride, preact, self.share, self.pool_block))
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"stages.{i}"))
            in_chs = width
        self.stages = nn.Sequential(*levels)
        self.num_features = self.head_hidden_size = in_chs
        if preact:
            # The pre-act iterates are never normalised on the way out: BN-ReLU before the pool. As in
            # timm's pre-act ResNetV2, the level-J feature is the raw iterate r_{J,ν} (``norm=True`` of
            # forward_intermediates or of the getter feature class applies this norm to it).
            self.norm: nn.Module = BatchNormAct2d(in_chs)
        else:
            self.norm = nn.Identity()
        self.init_head(num_classes, global_pool)
        init_weights(self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm parameter groups: stem, then one group per block (per level when ``coarse``).

        A level's shared operators join the group of its first block; the final norm of the
        pre-act model joins the last block group.
        """
        if coarse:
            blocks: object = [(r"^stages\.(\d+)", None), (r"^norm", (99999,))]
        else:
            blocks = [
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^stages\.(\d+)\.shared_[ab]", (0,)),
                (r"^norm", (99999,)),
            ]
        return dict(stem=r"^conv1|^bn1", blocks=blocks)

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem and all levels: the last iterate r_{J,ν_J} (normalised for pre-act)."""
        x = self.stages(self.stem(x))
        return self.norm(x)

    @torch.jit.ignore
    def iterate_levels(self, x: Tensor, levels: nn.Module) -> Iterator[Tensor]:
        """``fin(f)``, then the last iterate r_{ℓ,ν_ℓ} of each level (raw: ``norm`` is the caller's)."""
        x = self.stem(x)
        yield x
        for level in levels:
            x = level(x)
            yield x


def _create_resmg_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    """Build ``variant`` with its catalogue entry's architecture (:data:`VARIANTS`: depth, pre-act,
    sharing — written there once), the caller's ``kwargs`` on top."""
    kwargs = {**VARIANTS[variant].model_args(), **kwargs}
    # timm's FeatureListNet over the sequential levels by default; getter, hook and fx work too
    return build_zoo_model(ResMgResNet, variant, pretrained, family_feature_cfg=dict(flatten_sequential=True), **kwargs)


default_cfgs = tagged_cfgs(name for name, v in VARIANTS.items() if isinstance(v, ResNetVariant))


@register_model
@documented
def resnet18_unshared(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("resnet18_unshared", pretrained, **kwargs)


@register_model
@documented
def resnet18_sharedA(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("resnet18_sharedA", pretrained, **kwargs)


@register_model
@documented
def resnet18_sharedB(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("resnet18_sharedB", pretrained, **kwargs)


@register_model
@documented
def resnet18_sharedAB(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("resnet18_sharedAB", pretrained, **kwargs)


@register_model
@documented
def resnet34_unshared(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("resnet34_unshared", pretrained, **kwargs)


@register_model
@documented
def resnet34_sharedA(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("resnet34_sharedA", pretrained, **kwargs)


@register_model
@documented
def resnet34_sharedB(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("resnet34_sharedB", pretrained, **kwargs)


@register_model
@documented
def resnet34_sharedAB(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("resnet34_sharedAB", pretrained, **kwargs)


@register_model
@documented
def preact_resnet18_unshared(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("preact_resnet18_unshared", pretrained, **kwargs)


@register_model
@documented
def preact_resnet18_sharedA(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("preact_resnet18_sharedA", pretrained, **kwargs)


@register_model
@documented
def preact_resnet18_sharedB(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("preact_resnet18_sharedB", pretrained, **kwargs)


@register_model
@documented
def preact_resnet18_sharedAB(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("preact_resnet18_sharedAB", pretrained, **kwargs)


@register_model
@documented
def preact_resnet34_unshared(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("preact_resnet34_unshared", pretrained, **kwargs)


@register_model
@documented
def preact_resnet34_sharedA(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("preact_resnet34_sharedA", pretrained, **kwargs)


@register_model
@documented
def preact_resnet34_sharedB(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("preact_resnet34_sharedB", pretrained, **kwargs)


@register_model
@documented
def preact_resnet34_sharedAB(pretrained: bool = False, **kwargs: Any) -> ResMgResNet:
    return _create_resmg_resnet("preact_resnet34_sharedAB", pretrained, **kwargs)
