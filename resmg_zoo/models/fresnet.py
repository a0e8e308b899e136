"""F-ResNet: Algorithm 2 of the paper (§4), the iteration written in feature space.

    f_1 = fin(f),  u_{1,0} = 0
    for ℓ = 1..J:
        u_{ℓ,i} = u_{ℓ,i-1} + B_{ℓ,i}(f_ℓ − A_ℓ(u_{ℓ,i-1})),   i = 1..ν_ℓ          (Algorithm 2, line 4: smoothing)
        u_{ℓ+1,0} = Π ∗2 u_{ℓ,ν_ℓ}                                                  (line 6: interpolation)
        f_{ℓ+1}   = R ∗2 (f_ℓ − A_ℓ(u_{ℓ,ν_ℓ})) + A_{ℓ+1}(u_{ℓ+1,0})               (line 6: restriction)

``A_ℓ`` is ONE operator per level and ``B_{ℓ,i}`` one per iteration. Each takes one of the four forms
listed in §4.2 — ``linear`` K∗, ``pre`` K∗σ, ``post`` σ∘K∗, ``both`` σ∘K∗σ — 16 combinations,
the rows of Table 1.

Where BatchNorm goes (the paper's §4 writes none; its §5.2 trains every model with BN):
every σ of a form is a BN followed by ReLU, and nothing else is normalised. This is exactly MgNet's
smoother ``u ← u + σ(BN(B ∗ σ(BN(f − A ∗ u))))`` (He & Xu 2019, XuTeam/MgNet_Code) and the pre-act
ResNet block ``r ← r + A ∗ σ(BN(B ∗ σ(BN(r))))``, so that for ``a_form='linear'`` the residual of the
feature iteration follows the modified pre-act block exactly (Theorem 1; tested). A linear form stays
a plain convolution: BN in training mode is not a per-sample linear map, and Table 1's
``A∗, B∗`` row (70.96 %) is the all-linear network. The kernel K of A_ℓ (and of B_ℓ when
``share_b``) is owned once by its level; each *application* keeps its own BN, as the shared ResNets
keep a BN per block and MgNet a BN per iteration for its shared B.

``Π`` and ``R`` are 3×3 stride-2 convolutions (§4.1), each followed by a BN (``transfer_norm='bn'``,
the default): Algorithm 2's transfers stay linear maps (affine at inference), but the (u, f) pair is
rescaled at every level, as MgNet's restriction rescales it. Without it (``'none'``, Algorithm 2 with
no BN at all in the transfer) u_J and f_ℓ are never normalised: the default fresnet18 reaches a NaN
loss at step 5 of SGD at lr 0.1 without warmup on CIFAR-10 (``scripts/fresnet_stability.py``). ``'bn_act'`` is MgNet's
BN-ReLU; with ``share_b=True`` too, the model is MgNet (registered as ``mgnet``).
"""

from collections.abc import Iterator, Sequence
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from timm.models import register_model
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..core.choices import check_choice
from .base import LevelNetwork
from .blocks import conv3x3, init_weights
from .builder import build_zoo_model, tagged_cfgs
from .variants import FRESNET_VARIANTS, VARIANTS, documented

FORM_CHOICES: tuple[str, ...] = ("linear", "pre", "post", "both")
"""Forms of A_ℓ and B_{ℓ,i} in F-ResNet (§4.2, Table 1): K∗, K∗σ, σ∘K∗, σ∘K∗σ."""

TRANSFER_NORM_CHOICES: tuple[str, ...] = ("bn", "bn_act", "none")
"""What follows F-ResNet's Π and R: a BN (default), MgNet's BN-ReLU, or nothing (Algorithm 2 literally)."""


def _norm_act(chs: int, on: bool) -> nn.Module:
    """σ of the paper with its BatchNorm (BN then ReLU), or nothing."""
    return BatchNormAct2d(chs) if on else nn.Identity()


def _transfer_norm(chs: int, kind: str) -> nn.Module:
    """What follows Π or R: nothing, a BN, or MgNet's BN-ReLU."""
    if kind == "bn":
        return nn.BatchNorm2d(chs)
    return _norm_act(chs, kind == "bn_act")


class FormOperator(nn.Module):
    """One application of an operator in one of the four forms listed in §4.2.

    ``linear``: K ∗ x; ``pre``: K ∗ σ(x); ``post``: σ(K ∗ x); ``both``: σ(K ∗ σ(x)); σ = ReLU∘BN.
    The kernel K is this module's own convolution (``own_kernel``) or the level's shared one, passed
    to ``forward``.
    """

    def __init__(self, form: str, chs: int, own_kernel: bool) -> None:
        super().__init__()
        self.form = check_choice("form", form, FORM_CHOICES)
        self.pre_act = _norm_act(chs, form in ("pre", "both"))
        self.conv: Optional[nn.Conv2d] = conv3x3(chs, chs) if own_kernel else None
        self.post_act = _norm_act(chs, form in ("post", "both"))

    def forward(self, x: Tensor, kernel: Optional[Tensor] = None) -> Tensor:
        x = self.pre_act(x)
        if self.conv is not None:
            x = self.conv(x)
        elif kernel is not None:
            x = F.conv2d(x, kernel, None, 1, 1)
        else:
            raise RuntimeError("this operator shares its level's kernel but none was passed")
        return self.post_act(x)


class FeatureSmoother(nn.Module):
    """One smoothing step of Algorithm 2 (line 4): ``u ← u + B_{ℓ,i}(f_ℓ − A_ℓ(u))``.

    ``from_zero``: the very first step, from u_{1,0} = 0. There A_1(0) = 0 for every form and for
    the whole of training: K∗0 = 0, and a σ's BN maps the all-zero input to its shift β, which is
    initialised to 0 and gets no gradient through ReLU at 0. So that step owns no A application
    (no parameter that could never learn) and computes ``u_{1,1} = B_{1,1}(f_1)``.
    """

    def __init__(self, chs: int, a_form: str, b_form: str, own_b: bool, from_zero: bool = False) -> None:
        super().__init__()
        # this application of the level's A_ℓ (the kernel is the level's; the BNs are this step's)
        self.a: Optional[FormOperator] = None if from_zero else FormOperator(a_form, chs, own_kernel=False)
        self.b = FormOperator(b_form, chs, own_kernel=own_b)  # B_{ℓ,i} (or the level's B_ℓ)

    def forward(self, u: Tensor, f: Tensor, a_kernel: Tensor, b_kernel: Optional[Tensor] = None) -> Tensor:
        if self.a is None:
            return u + self.b(f, b_kernel)  # u = u_{1,0} = 0 and A_1(0) = 0
        return u + self.b(f - self.a(u, a_kernel), b_kernel)


class FResNetLevel(nn.Module):
    """Level ℓ of Algorithm 2: the transfer into it (line 6), ν_ℓ smoothing steps, and the
    residual ``f_ℓ − A_ℓ(u_{ℓ,ν_ℓ})`` that the next level restricts.

    ``conv_a`` is the level's single kernel of A_ℓ, used by every application of A_ℓ: in each
    smoothing step, in ``A_ℓ(u_{ℓ,0})`` of the transfer into the level (``a_in``) and in the
    residual handed to the next level (``a_out``).

    Args:
        in_chs: channels of level ℓ-1 (ignored for the first level).
        chs: channels of u_ℓ and f_ℓ.
        depth: ν_ℓ, the number of smoothing steps.
        a_form, b_form: forms of A_ℓ and B_{ℓ,i} (``linear``, ``pre``, ``post``, ``both``).
        share_b: one B_ℓ kernel per level instead of one per step (MgNet).
        first: level 1 (no transfer into it).
        last: level J (no residual out of it).
        transfer_norm: after Π and R: ``bn`` (default), ``bn_act`` (MgNet) or ``none``.
    """

    def __init__(
        self,
        in_chs: int,
        chs: int,
        depth: int,
        a_form: str,
        b_form: str,
        share_b: bool = False,
        first: bool = False,
        last: bool = False,
        transfer_norm: str = "bn",
    ) -> None:
        super().__init__()
        transfer_norm = check_choice("transfer_norm", transfer_norm, TRANSFER_NORM_CHOICES)
        if depth < 1:
            raise ValueError(f"a level needs at least one smoothing step, got ν={depth}")
        self.conv_a = conv3x3(chs, chs)  # A_ℓ
        self.conv_b: Optional[nn.Conv2d] = conv3x3(chs, chs) if share_b else None  # B_ℓ (MgNet)
        self.interp: Optional[nn.Conv2d] = None if first else conv3x3(in_chs, chs, stride=2)  # Π
        self.restrict: Optional[nn.Conv2d] = None if first else conv3x3(in_chs, chs, stride=2)  # R
        self.interp_norm = _transfer_norm(chs, "none" if first else transfer_norm)
        self.restrict_norm = _transfer_norm(chs, "none" if first else transfer_norm)
        self.a_in: Optional[FormOperator] = None if first else FormOperator(a_form, chs, own_kernel=False)
        self.smoothers = nn.ModuleList(
            [FeatureSmoother(chs, a_form, b_form, own_b=not share_b, from_zero=first and i == 0) for i in range(depth)]
        )
        self.a_out: Optional[FormOperator] = None if last else FormOperator(a_form, chs, own_kernel=False)
        # u_{ℓ,ν_ℓ} passes through this identity: the module that forward hooks and FX name as the
        # level's feature (the level itself returns the pair (u, f)). It holds no parameters.
        self.feature = nn.Identity()
        self.grad_checkpointing = False

    def forward(self, u: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
        """``(u_{ℓ-1,ν}, f_{ℓ-1} − A_{ℓ-1}(u_{ℓ-1,ν}))`` → ``(u_{ℓ,ν}, f_ℓ − A_ℓ(u_{ℓ,ν}))``.

        For the first level the input is ``(u_{1,0}, f_1)``; for the last the output is ``(u_{J,ν}, f_J)``.
        """
        a = self.conv_a.weight
        b: Optional[Tensor] = None
        if self.conv_b is not None:
            b = self.conv_b.weight
        if self.interp is not None and self.restrict is not None and self.a_in is not None:
            u = self.interp_norm(self.interp(u))  # u_{ℓ,0} = Π ∗2 u_{ℓ-1,ν}
            f = self.restrict_norm(self.restrict(f)) + self.a_in(u, a)  # f_ℓ = R ∗2 r_{ℓ-1} + A_ℓ(u_{ℓ,0})
        for smoother in self.smoothers:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                u = checkpoint(smoother, u, f, a, b, use_reentrant=False)
            else:
                u = smoother(u, f, a, b)
        u = self.feature(u)
        if self.a_out is not None:
            f = f - self.a_out(u, a)
        return u, f


class FResNet(LevelNetwork):
    """F-ResNet of Algorithm 2 with J levels; the head reads u_J (average pool, linear).

    The stem is ``fin(f) = σ(BN(θ0 ∗ f))`` (3×3 stride 1, no max-pool) and u_{1,0} = 0 has the
    shape of f_1, as in MgNet. Levels run at reductions 1, 2, 4, 8 for J = 4.

    Args:
        layers: ν_ℓ per level, e.g. (2, 2, 2, 2).
        widths: channels of (u_ℓ, f_ℓ) per level.
        a_form: form of A_ℓ: ``linear`` (K∗, default: Table 1's best row), ``pre``, ``post``, ``both``.
        b_form: form of B_{ℓ,i}: ``both`` (σ∘K∗σ, default: Table 1's best row), ``linear``, ``pre``, ``post``.
        share_b: one B_ℓ kernel per level (MgNet) instead of one per smoothing step.
        transfer_norm: after Π and R: ``bn`` (default; the transfer stays linear), ``bn_act`` (MgNet's
            BN-ReLU) or ``none`` (no normalisation at all: diverges at the paper's lr, see above).
        in_chans: image channels.
        num_classes: classes of the head (0 for none).
        global_pool: timm pool type (``''`` keeps the feature map).
        drop_rate: dropout before the head.
    """

    def __init__(
        self,
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        a_form: str = "linear",
        b_form: str = "both",
        share_b: bool = False,
        transfer_norm: str = "bn",
        in_chans: int = 3,
        num_classes: int = 10,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        widths, layers = self.init_common(widths, layers, in_chans, num_classes, drop_rate)
        self.a_form = check_choice("a_form", a_form, FORM_CHOICES)
        self.b_form = check_choice("b_form", b_form, FORM_CHOICES)
        self.share_b = bool(share_b)
        self.transfer_norm = check_choice("transfer_norm", transfer_norm, TRANSFER_NORM_CHOICES)

        self.conv1 = conv3x3(in_chans, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module="act1")]
        levels, reduction = [], 1
        for i, (chs, depth) in enumerate(zip(widths, layers)):
            reduction *= 1 if i == 0 else 2
            levels.append(
                FResNetLevel(
                    widths[i - 1] if i else chs,
                    chs,
                    depth,
                    self.a_form,
                    self.b_form,
                    share_b=self.share_b,
                    first=i == 0,
                    last=i == len(widths) - 1,
                    transfer_norm=self.transfer_norm,
                )
            )
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"stages.{i}.feature"))
        self.stages = nn.ModuleList(levels)
        self.num_features = self.head_hidden_size = widths[-1]
        self.norm = nn.Identity()  # Algorithm 2 reads u_J as it is: no final norm
        self.init_head(num_classes, global_pool)
        init_weights(self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm parameter groups: stem, then one group per smoothing step (per level when ``coarse``).

        A level's own parts (A_ℓ, B_ℓ, Π, R and the BNs of the transfer) join its first step's group.
        """
        if coarse:
            blocks: object = r"^stages\.(\d+)"
        else:
            blocks = [
                (r"^stages\.(\d+)\.smoothers\.(\d+)", None),
                (r"^stages\.(\d+)\.(?:conv_[ab]|interp|restrict|a_in|a_out)", (0,)),
            ]
        return dict(stem=r"^conv1|^bn1", blocks=blocks)

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem and all levels: the last feature u_{J,ν_J}."""
        f = self.stem(x)
        u = torch.zeros_like(f)  # u_{1,0} = 0
        for level in self.stages:
            u, f = level(u, f)
        return u

    @torch.jit.ignore
    def iterate_levels(self, x: Tensor, levels: nn.Module) -> Iterator[Tensor]:
        """f_1 = ``fin(f)``, then u_{ℓ,ν_ℓ} of each level: the levels pass (u, f) pairs, so this is how
        timm's getter feature class (the default for ``features_only``) reads them."""
        f = self.stem(x)
        yield f
        u = torch.zeros_like(f)  # u_{1,0} = 0
        for level in levels:
            u, f = level(u, f)
            yield u

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: Union[int, list[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """As the base class; the last level kept hands no residual on."""
        take_indices = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        if len(self.stages):
            self.stages[-1].a_out = None  # no next level to hand a residual to
        return take_indices


def _create_fresnet(variant: str, pretrained: bool = False, **kwargs: Any) -> FResNet:
    """Build ``variant`` with its catalogue entry's architecture (:data:`VARIANTS`), ``kwargs`` on top."""
    kwargs = {**VARIANTS[variant].model_args(), **kwargs}
    # (u, f) pairs pass between the levels: timm's FeatureGetterNet over forward_intermediates by
    # default; hooks and FX read each level's ``feature`` tap. timm's list/dict classes call the
    # children one after another, which a level taking (u, f) cannot follow.
    chosen = kwargs.get("feature_cls", (kwargs.get("feature_cfg") or {}).get("feature_cls"))
    if kwargs.get("features_only") and chosen in ("list", "dict"):
        raise ValueError(
            f"{variant}: features_only with feature_cls={chosen!r} cannot run F-ResNet, whose levels pass (u, f) "
            "pairs; use 'getter' (the default), 'hook' or 'fx'"
        )
    return build_zoo_model(FResNet, variant, pretrained, family_feature_cfg=dict(feature_cls="getter"), **kwargs)


default_cfgs = tagged_cfgs(v.name for v in FRESNET_VARIANTS)


@register_model
@documented
def fresnet18(pretrained: bool = False, **kwargs: Any) -> FResNet:
    return _create_fresnet("fresnet18", pretrained, **kwargs)


@register_model
@documented
def mgnet(pretrained: bool = False, **kwargs: Any) -> FResNet:
    return _create_fresnet("mgnet", pretrained, **kwargs)
