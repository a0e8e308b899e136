"""The eval-mode model rewritten for inference: every convolution call site its own ``nn.Conv2d``, and
every batch norm that follows a convolution folded into it.

In eval mode a BN is the affine map ``BN(y) = γ (y − μ) / √(σ² + ε) + β`` with frozen statistics, so
``BN(W ∗ x) = (s·W) ∗ x + (β − s·μ)`` with ``s = γ / √(σ² + ε)`` per output channel: one convolution
with a bias instead of a convolution and a pass over its output. Which BNs that removes, per model:

* pre-activation blocks (eq. (2.1)/(3.11), ``r ← r + A ∗ σ(BN(B ∗ σ(BN(r))))``): the inner BN after
  ``B`` folds into ``B``; the leading ``σ(BN(r))`` follows the residual sum, not a convolution, and
  stays (inductor fuses it with its ReLU under ``--compile``);
* post-activation blocks (eq. (2.3)/(3.12)): both BNs, and the shortcut's ``BN(R ∗2 r)``;
* a **shared** operator (``A_ℓ`` or ``B_ℓ`` of §3, one tensor per level) is applied at several call
  sites, and the BN after each site is that block's own (§5.3: BNs are never shared). Folding it gives
  every site its own folded weight ``s_i·A_ℓ``; sites with no BN after them keep the one shared tensor
  (``unshare=False``) or a copy each (``unshare=True``, what int8 quantisation needs: torchao annotates a
  convolution only through its own weight).

The trained model is not touched: :func:`fold_for_inference` returns a new ``torch.fx.GraphModule``
that computes the same function (to rounding) and holds no BN that follows a convolution.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.proxy import TraceError

from ..core.errors import UsageError

CONV_FUNCTIONS = (F.conv2d, torch.conv2d)
FX_SOURCE = Path(fx.__file__).resolve().parent
_ARG_NAMES = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


@dataclass(frozen=True)
class FoldReport:
    """What :func:`fold_for_inference` changed: BNs folded, convolution call sites (one module each),
    and the sites that applied a shared weight."""

    folded_bn: int
    conv_sites: int
    shared_sites: int


@dataclass
class _Site:
    """One convolution call: its input node and everything ``F.conv2d`` needs besides."""

    input: fx.Node
    weight: nn.Parameter
    bias: Optional[Tensor]
    stride: Any
    padding: Any
    dilation: Any
    groups: int
    shared: bool

    def module(self, weight: Tensor, bias: Optional[Tensor]) -> nn.Conv2d:
        """An ``nn.Conv2d`` of this call holding ``weight`` (the very tensor where it is a Parameter)."""
        out_chs, in_per_group, kh, kw = weight.shape
        conv = nn.Conv2d(
            in_per_group * self.groups,
            out_chs,
            (kh, kw),
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            bias=bias is not None,
            device="meta",
        )
        conv.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            conv.bias = bias if isinstance(bias, nn.Parameter) else nn.Parameter(bias, requires_grad=False)
        return conv


def _site(gm: fx.GraphModule, node: fx.Node, weight_users: dict[str, int]) -> Optional[_Site]:
    """The convolution call at ``node``, or ``None`` where ``node`` is not one this pass can rewrite."""
    if node.op == "call_module":
        conv = gm.get_submodule(str(node.target))
        if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros":
            return None
        return _Site(node.args[0], conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups, False)
    if node.op != "call_function" or node.target not in CONV_FUNCTIONS:
        return None
    args = dict(zip(_ARG_NAMES, node.args)) | dict(node.kwargs)
    weight, bias = args["weight"], args.get("bias")
    if not (isinstance(weight, fx.Node) and weight.op == "get_attr"):
        return None
    if bias is not None and not (isinstance(bias, fx.Node) and bias.op == "get_attr"):
        return None
    return _Site(
        args["input"],
        gm.get_parameter(str(weight.target)),
        None if bias is None else gm.get_parameter(str(bias.target)),
        args.get("stride", 1),
        args.get("padding", 0),
        args.get("dilation", 1),
        args.get("groups", 1),
        weight_users[str(weight.target)] > 1,
    )


def _following_bn(gm: fx.GraphModule, node: fx.Node) -> Optional[tuple[fx.Node, nn.BatchNorm2d]]:
    """The eval-mode ``nn.BatchNorm2d`` that is the only user of ``node``'s output, if there is one."""
    if len(node.users) != 1:
        return None
    user = next(iter(node.users))
    if user.op != "call_module":
        return None
    bn = gm.get_submodule(str(user.target))
    if type(bn) is not nn.BatchNorm2d or bn.training or bn.running_var is None or bn.running_mean is None:
        return None
    return user, bn


def fold_bn(weight: Tensor, bias: Optional[Tensor], bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """``(s·W, s·(b − μ) + β)`` with ``s = γ / √(σ² + ε)``: the convolution that computes ``BN(W ∗ x + b)``."""
    assert bn.running_var is not None and bn.running_mean is not None
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -mean * scale if bias is None else (bias.double() - mean) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    folded = weight.double() * scale.view(-1, *([1] * (weight.dim() - 1)))
    return folded.to(weight.dtype), shift.to(weight.dtype)


def _one_module_per_call(gm: fx.GraphModule) -> None:
    """Give every further call of a module called at several places (a block's one ``nn.ReLU``) its own
    copy: torchao groups nodes into patterns by the module that made them, one output each."""
    seen: set[str] = set()
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        if node.target in seen:
            copy_name = f"call_sites.{node.name}"
            gm.add_submodule(copy_name, copy.deepcopy(gm.get_submodule(str(node.target))))
            with gm.graph.inserting_before(node):  # a new node: the old one's metadata names the old module
                new = gm.graph.call_module(copy_name, node.args, node.kwargs)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            continue
        seen.add(str(node.target))


def refused_by_fx(err: BaseException) -> bool:
    """Whether ``err`` is FX refusing to trace a model: a :class:`~torch.fx.proxy.TraceError` (control flow
    on a traced value: ``if x.sum() > 0``, a loop over a proxy), or a ``NotImplementedError`` or
    ``RuntimeError`` raised by torch.fx's own code (``len`` of a proxy, an argument it cannot record).
    The same types raised anywhere else — the model's ``forward``, a torch op — are not."""
    if isinstance(err, TraceError):
        return True
    frame = err.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and Path(frame.tb_frame.f_code.co_filename).resolve().is_relative_to(FX_SOURCE)


def fold_for_inference(model: nn.Module, unshare: bool = False) -> tuple[fx.GraphModule, FoldReport]:
    """``model`` (eval mode) as a graph whose convolutions are modules, one per call site, with the BNs
    that follow them folded in. ``unshare``: every site gets its own copy of a shared weight."""
    if model.training:
        raise UsageError("fold_for_inference needs an eval-mode model (.eval()): a training BN is no fixed affine map")
    try:
        gm = fx.symbolic_trace(model)
    except (TraceError, NotImplementedError, RuntimeError) as err:
        if not refused_by_fx(err):
            raise  # the model's own error (or ours): a bug, with its traceback
        raise UsageError(f"{type(model).__name__} cannot be traced for inference folding: {err}") from err
    weight_users: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in CONV_FUNCTIONS:
            weight = (dict(zip(_ARG_NAMES, node.args)) | dict(node.kwargs)).get("weight")
            if isinstance(weight, fx.Node) and weight.op == "get_attr":
                weight_users[str(weight.target)] = weight_users.get(str(weight.target), 0) + 1
    folded = sites = shared = 0
    with torch.no_grad():
        for node in list(gm.graph.nodes):
            site = _site(gm, node, weight_users)
            if site is None:
                continue
            following = _following_bn(gm, node)
            weight, bias = site.weight, site.bias
            if following is not None:
                weight, bias = fold_bn(weight, bias, following[1])
                folded += 1
            elif unshare and site.shared:
                weight = weight.detach().clone()
            name = f"conv_sites.{node.name}"
            gm.add_submodule(name, site.module(weight, bias))
            with gm.graph.inserting_before(node):
                new = gm.graph.call_module(name, (site.input,))
            end = following[0] if following is not None else node
            end.replace_all_uses_with(new)
            if following is not None:
                gm.graph.erase_node(following[0])
            gm.graph.erase_node(node)
            sites += 1
            shared += site.shared
    if unshare:
        _one_module_per_call(gm)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    for attr in ("pretrained_cfg", "default_cfg", "num_classes"):
        if hasattr(model, attr):
            setattr(gm, attr, getattr(model, attr))
    gm.eval()
    return gm, FoldReport(folded, sites, shared)
