"""The convolutions of a model alone: the speed a training step could reach if everything but the
convolutions cost nothing.

:func:`record_convs` runs one training forward and records every ``conv2d`` call as it happens (a
module's, or a level's shared ``A`` once per block that applies it): the input's shape,
dtype and layout, whether the step needs the gradient of that input (not for the first layer's,
which is the image), and the convolution's weight shape, stride, padding, dilation and groups.
:class:`ConvCeiling` then runs exactly those calls — forward, and in training both backward passes
(input and weight) — under the same autocast, on tensors made once. Its images/s is the ceiling
that ``benchmark`` prints beside the models ("conv ceiling" row): where a model trains at nearly
that rate, its convolutions (oneDNN's kernels) bind, not the rest of the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair
from torch.overrides import TorchFunctionMode

from ...core.hardware import autocast_context


@dataclass(frozen=True)
class ConvCall:
    """One call of a 2-D convolution in a training forward."""

    input_shape: tuple[int, ...]
    input_dtype: torch.dtype
    channels_last: bool
    input_grad: bool
    weight_shape: tuple[int, ...]
    bias: bool
    stride: Any
    padding: Any
    dilation: Any
    groups: int


class _Recorder(TorchFunctionMode):
    """Sees every ``conv2d`` call, the modules' and the shared weights' ``F.conv2d`` alike."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ConvCall] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in (F.conv2d, torch.conv2d):
            named = dict(zip(("input", "weight", "bias", "stride", "padding", "dilation", "groups"), args)) | kwargs
            x, weight = named["input"], named["weight"]
            self.calls.append(
                ConvCall(
                    tuple(x.shape),
                    x.dtype,
                    x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(),
                    x.requires_grad,
                    tuple(weight.shape),
                    named.get("bias") is not None,
                    _pair(named.get("stride", 1)),
                    named["padding"] if isinstance(named.get("padding"), str) else _pair(named.get("padding", 0)),
                    _pair(named.get("dilation", 1)),
                    named.get("groups", 1),
                )
            )
        return func(*args, **kwargs)


def record_convs(model: nn.Module, x: torch.Tensor, precision: str) -> list[ConvCall]:
    """Every 2-D convolution of one training-mode forward of ``model`` on ``x``, in order."""
    model.train()
    with _Recorder() as recorder, autocast_context(precision, x.device):
        model(x)
    model.zero_grad(set_to_none=True)
    return recorder.calls


class _Prepared:
    """One call's tensors, made once: input, weight, bias and the gradient its output gets."""

    def __init__(self, call: ConvCall, precision: str):
        self.call = call
        memory_format = torch.channels_last if call.channels_last else torch.contiguous_format
        self.x = torch.randn(call.input_shape).to(call.input_dtype).contiguous(memory_format=memory_format)
        self.x.requires_grad_(call.input_grad)
        self.weight = torch.randn(call.weight_shape).contiguous(memory_format=memory_format).requires_grad_()
        self.bias: Optional[torch.Tensor] = torch.zeros(call.weight_shape[0], requires_grad=True) if call.bias else None
        self.precision = precision
        with torch.no_grad():
            out = self.forward()
        self.grad = torch.randn(out.shape).to(out.dtype).contiguous(memory_format=memory_format)

    def forward(self) -> torch.Tensor:
        c = self.call
        with autocast_context(self.precision, self.x.device):
            return F.conv2d(self.x, self.weight, self.bias, c.stride, c.padding, c.dilation, c.groups)


class ConvCeiling:
    """The recorded convolutions alone, timed like a model: :meth:`train_step` runs each call's
    forward and backward (gradients of the input where the model needs it, and of the weight);
    :meth:`infer_step` the forwards without autograd."""

    def __init__(self, calls: list[ConvCall], precision: str):
        self.calls = [_Prepared(call, precision) for call in calls]

    def flops_per_image(self) -> tuple[float, float]:
        """(forward, training) FLOPs per image of the calls, a multiply-add counting 2; training is
        forward + the weight's gradient + the input's where it is needed (each as many as the forward)."""
        forward = training = 0.0
        for p in self.calls:
            out, w, c = p.grad.shape, p.call.weight_shape, p.call
            flops = 2.0 * out[1] * out[2] * out[3] * w[1] * w[2] * w[3]  # per image: Cout·H·W·(Cin/g)·kh·kw
            forward += flops
            training += flops * (3 if c.input_grad else 2)
        return forward, training

    def train_step(self) -> None:
        for p in self.calls:
            p.forward().backward(p.grad)
            p.x.grad = p.weight.grad = None  # as the model's zero_grad(set_to_none=True)
            if p.bias is not None:
                p.bias.grad = None

    @torch.no_grad()
    def infer_step(self) -> None:
        for p in self.calls:
            p.forward()
