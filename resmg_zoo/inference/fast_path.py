"""The fast path every inference command takes: batch norm folded into the convolutions
(:mod:`.fold`), channels_last, ``torch.inference_mode``, the precision ``auto`` picks, and — with
``compile`` — ``torch.compile`` with inductor's *freezing*, which treats the weights as constants:
oneDNN's weight pre-packing, and ReLU and the residual sum fused into the convolution before them.

The results are the model's: folding is exact up to float rounding, and the tests compare the fast
path's top-1 with fp32 eager on real test images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..core.hardware import autocast_context
from .fold import FoldReport, fold_for_inference


@dataclass(frozen=True)
class FastPathSettings:
    """How a model runs for inference (recorded beside every result it gives)."""

    precision: str
    fold_bn: bool = True
    compile: bool = False
    channels_last: bool = True

    def record(self, report: Optional[FoldReport]) -> dict[str, Any]:
        return asdict(self) | ({"folded_bn": report.folded_bn, "conv_sites": report.conv_sites} if report else {})


class FrozenCompiled:
    """``torch.compile`` of ``module`` whose every compilation (the first call, a recompile for a new
    batch size) runs with inductor's ``freezing`` on: weights become constants, so BN folds, oneDNN
    pre-packs them, and quantized weights lower to oneDNN's int8 convolutions. (``options={"freezing":
    True}`` is not the same: dynamo then lifts the weights as graph inputs and nothing is frozen.)"""

    def __init__(self, module: nn.Module, dynamic: Optional[bool] = None) -> None:
        import torch._inductor.config as inductor_config  # only where a model is compiled

        self.compiled = torch.compile(module, dynamic=dynamic)
        self.inductor_config = inductor_config

    def __call__(self, x: Tensor) -> Tensor:
        with self.inductor_config.patch(freezing=True):
            return self.compiled(x)


class FastPath:
    """``model`` prepared for inference as ``settings`` say; call it on a batch for float32 logits.

    The trained model is left as it was (folding builds a new graph holding its weights)."""

    def __init__(self, model: nn.Module, settings: FastPathSettings) -> None:
        self.settings = settings
        model = model.eval()
        self.fold_report: Optional[FoldReport] = None
        if settings.fold_bn:
            model, self.fold_report = fold_for_inference(model)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.module: Callable[[Tensor], Tensor] = FrozenCompiled(model) if settings.compile else model
        self.device = next(model.parameters()).device

    def __call__(self, x: Tensor) -> Tensor:
        if self.settings.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast_context(self.settings.precision, self.device):
            return self.module(x).float()

    def record(self) -> dict[str, Any]:
        """The settings and what folding did, for a result's JSON."""
        return self.settings.record(self.fold_report)
