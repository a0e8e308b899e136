"""Basic and pooling blocks of (pre-act) ResNet, written as the paper writes them.

A block computes one iterate of the residual r_{ℓ,i}. Its two 3×3 convolutions are named after the
paper: ``B`` is the first (the smoother B_{ℓ,i}), ``A`` the second (the data-feature map A_{ℓ,i}).
Either may be *shared*: the block then owns no convolution for it and the level passes the one
weight tensor of its level (A_ℓ or B_ℓ) into ``forward``. This keeps each shared operator a single
parameter owned by its level, so ``state_dict()`` has no aliased keys.
"""

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """The paper's ``∗`` (stride 1) or ``∗2`` (stride 2): 3×3, zero padding, no bias."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 2) -> nn.Conv2d:
    """The projection ``R^{ℓ+1}_ℓ ∗2`` of the pooling block: 1×1, stride 2, no bias."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)


def _shared_conv(shared: Optional[Tensor], x: Tensor) -> Tensor:
    """Apply the level's shared 3×3 stride-1 weight (A_ℓ or B_ℓ)."""
    if shared is None:
        raise RuntimeError("this block shares a convolution but its level passed no weight")
    return F.conv2d(x, shared, None, 1, 1)


class _BlockBase(nn.Module):
    """What post- and pre-act blocks have in common: which operators they own, and the pooling form.

    Args:
        in_chs: channels of r_{ℓ,i-1} (of r_{ℓ-1,ν} for a pooling block).
        out_chs: channels of the level.
        stride: 2 for the pooling block (first block of levels 2..J), else 1.
        own_a: the block has its own A_{ℓ,i}; False when the level shares A_ℓ.
        own_b: the block has its own B_{ℓ,i}; False when the level shares B_ℓ.
        pool_block: the pooling form (used only by a pooling block). ``conv`` (eq. (3.14)): B̃ ∗2
            works on r; ``restrict`` (eq. (3.17)): the level's ordinary block works on the
            restricted residual R ∗2 r.

    ``restrict`` (the module) is R^{ℓ+1}_ℓ ∗2, the restriction of the shortcut (eq. (2.2)), in both
    pooling forms; ``on_restricted`` says whether the block's B also works on R ∗2 r.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        own_a: bool,
        own_b: bool,
        pool_block: str,
    ) -> None:
        super().__init__()
        pooling = stride != 1 or in_chs != out_chs
        self.on_restricted = bool(pooling and pool_block == "restrict")
        b_in, b_stride = (out_chs, 1) if self.on_restricted else (in_chs, stride)
        if not own_b and b_stride != 1:
            raise ValueError("a strided pooling B̃_{ℓ,0} cannot be the level's shared B_ℓ (§5.3)")
        self.conv_b: Optional[nn.Conv2d] = conv3x3(b_in, out_chs, b_stride) if own_b else None
        self.conv_a: Optional[nn.Conv2d] = conv3x3(out_chs, out_chs) if own_a else None
        self.pooling = pooling
        # The BNs are named after the convolution whose σ(BN(·)) they belong to: ``bn_b`` normalises
        # B's output in the post-act block (σ(BN(B ∗ r))) and B's input in the pre-act one
        # (B ∗ σ(BN(r))); ``bn_a`` likewise for A. The names are the state-dict keys of every
        # published checkpoint, so they stay. BNs are never shared (§5.3).

    def apply_b(self, x: Tensor, shared_b: Optional[Tensor]) -> Tensor:
        """``B_{ℓ,i} ∗ x`` with the block's own B, or the level's shared B_ℓ."""
        if self.conv_b is not None:
            return self.conv_b(x)
        return _shared_conv(shared_b, x)

    def apply_a(self, x: Tensor, shared_a: Optional[Tensor]) -> Tensor:
        """``A_{ℓ,i} ∗ x`` with the block's own A, or the level's shared A_ℓ."""
        if self.conv_a is not None:
            return self.conv_a(x)
        return _shared_conv(shared_a, x)


class PostActBlock(_BlockBase):
    """Classic (post-activation) ResNet block, eq. (2.3) and its modified form (3.12).

    ``r ← σ(r + BN(A ∗ σ(BN(B ∗ r))))``. As a pooling block, eq. (2.4):
    ``r ← σ(BN(R ∗2 r) + BN(A ∗ σ(BN(B̃ ∗2 r))))``; in the ``restrict`` form
    ``s = BN(R ∗2 r)``, ``r ← σ(s + BN(A ∗ σ(BN(B ∗ s))))``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        own_a: bool = True,
        own_b: bool = True,
        pool_block: str = "conv",
    ) -> None:
        super().__init__(in_chs, out_chs, stride, own_a, own_b, pool_block)
        self.bn_b = nn.BatchNorm2d(out_chs)
        self.bn_a = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)
        self.restrict: Optional[nn.Sequential] = None
        if self.pooling:
            self.restrict = nn.Sequential(conv1x1(in_chs, out_chs, stride), nn.BatchNorm2d(out_chs))

    def forward(self, x: Tensor, shared_a: Optional[Tensor] = None, shared_b: Optional[Tensor] = None) -> Tensor:
        shortcut = x
        if self.restrict is not None:
            shortcut = self.restrict(x)
            if self.on_restricted:
                x = shortcut
        y = self.act(self.bn_b(self.apply_b(x, shared_b)))
        y = self.bn_a(self.apply_a(y, shared_a))
        return self.act(shortcut + y)


class PreActBlock(_BlockBase):
    """Pre-activation ResNet block, eq. (2.1) of Algorithm 1 and the modified form (3.11).

    ``r ← r + A ∗ σ(BN(B ∗ σ(BN(r))))``. As a pooling block, eq. (2.2)/(3.14):
    ``r ← R ∗2 r + A ∗ σ(BN(B̃ ∗2 σ(BN(r))))``; in the ``restrict`` form (3.17)
    ``s = R ∗2 r``, ``r ← s + A ∗ σ(BN(B ∗ σ(BN(s))))``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        own_a: bool = True,
        own_b: bool = True,
        pool_block: str = "conv",
    ) -> None:
        super().__init__(in_chs, out_chs, stride, own_a, own_b, pool_block)
        self.bn_b = nn.BatchNorm2d(out_chs if self.on_restricted else in_chs)
        self.bn_a = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)
        self.restrict: Optional[nn.Conv2d] = conv1x1(in_chs, out_chs, stride) if self.pooling else None

    def forward(self, x: Tensor, shared_a: Optional[Tensor] = None, shared_b: Optional[Tensor] = None) -> Tensor:
        shortcut = x
        if self.restrict is not None:
            shortcut = self.restrict(x)
            if self.on_restricted:
                x = shortcut
        y = self.apply_b(self.act(self.bn_b(x)), shared_b)
        y = self.apply_a(self.act(self.bn_a(y)), shared_a)
        return shortcut + y


def init_weights(module: nn.Module) -> None:
    """Kaiming (He et al. 2015) normal init of every convolution, BN to identity (paper §5.2)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
