"""int8 models through torchao's PT2E flow, rebuilt by our own code from data.

    quantize: fold BN (:mod:`.fold`, one ``nn.Conv2d`` per call site, a shared ``A_ℓ`` copied to each
    site) → ``torch.export`` → ``prepare_pt2e`` with ``X86InductorQuantizer`` (static, per-channel
    symmetric int8 weights, per-tensor uint8 activations) → calibrate on training images →
    ``convert_pt2e``; run: ``torch.compile`` with freezing, which lowers the q/dq pairs into oneDNN's
    quantized convolutions (VNNI / AMX int8 units where the CPU has them).

What calibration found is kept as data (:mod:`.int8_record`): the scale and zero point of every
activation quantizer. :func:`rebuild_int8` makes the same program from the float model and those
numbers — the same steps, with each activation observer replaced by torchao's
``FixedQParamsObserver`` holding the recorded values, and the weight observers run on the folded
weights — so an int8 model is never a saved program (``torch.export.load`` unpickles and evaluates what
a file says) and needs no calibration data where it is loaded. Rebuilt and calibrated programs are
the same graph with the same constants: the export checks that they give the same logits.

Why an int8 model needs one weight per call site, even for a shared ``A_ℓ``: BN folding scales every
site's copy by its own block's BN, and torchao quantizes a convolution only through its own weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.counting import checkpoint_bytes
from ..core.errors import ResmgError, UsageError
from ..data.datasets import ImageDataset
from ..data.loader import EpochPlan, Materializer
from .fast_path import FrozenCompiled
from .fold import FoldReport, fold_for_inference
from .int8_record import ActivationQParams, Int8RecordError


class QuantizationIncomplete(ResmgError):
    """Quantization left convolutions in float: the known way for int8 to silently do nothing (exit 1)."""


class Int8RebuildMismatch(ResmgError):
    """A program rebuilt from an int8 record does not answer as the calibrated one did (exit 1): the
    record would not reproduce the model it describes."""


def require_torchao() -> Any:
    """torchao's PT2E module (importing it also registers the ``quantized_decomposed`` ops), or a
    :class:`UsageError` that says how to install it."""
    try:
        from torchao.quantization.pt2e import quantize_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer  # noqa: F401 (registers inductor's
        # int8 lowering: without it a frozen int8 program is dequantized to float convolutions at compile time)
    except ImportError as err:
        raise UsageError("int8 needs torchao: pip install 'resmg_zoo[int8]' (torchao>=0.18)") from err
    return quantize_pt2e


@dataclass(frozen=True)
class QuantizedCount:
    """Convolutions in a converted graph, and those that run on int8 weights and int8 activations."""

    convs: int
    quantized: int


def count_quantized_convs(graph: torch.fx.Graph) -> QuantizedCount:
    """A convolution counts as quantized when its weight comes from ``dequantize_per_channel`` of an
    int8 tensor and its input from ``dequantize_per_tensor`` (the pattern inductor lowers to qconv)."""

    def produced_by(arg: Any, name: str) -> bool:
        return isinstance(arg, torch.fx.Node) and arg.op == "call_function" and name in str(arg.target)

    convs = [n for n in graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.conv2d.default]
    quantized = [
        n
        for n in convs
        if produced_by(n.args[1], "dequantize_per_channel") and produced_by(n.args[0], "dequantize_per_tensor")
    ]
    return QuantizedCount(len(convs), len(quantized))


def calibration_batches(dataset: ImageDataset, images: int, batch_size: int = 64, seed: int = 0) -> Iterator[Tensor]:
    """``images`` training images of ``dataset`` (a seeded draw, normalised as in evaluation,
    channels_last), in batches: what the observers see, for both int8 routes (PT2E and ONNX Runtime).
    :class:`UsageError` where there are none."""
    if images < 1:
        raise UsageError(f"--calibration-images must be at least 1, got {images}")
    split = dataset.split("train")
    if not len(split):
        raise UsageError(f"{dataset.name} has no training images to calibrate on")
    picked = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:images]
    data = Materializer(split.subset(picked.sort().values), dataset.mean, dataset.std, channels_last=True)
    plan = EpochPlan(len(data.split), batch_size, seed=0, shuffle=False, drop_last=False)
    for batch in plan.batches(0):
        yield data(batch)[0]


@dataclass
class Quantized:
    """The converted graph and how it was made: what folding did, the quantized convolutions, the
    activation quantizers (the record's data), the calibration images seen (0 for a rebuild), and the
    safetensors size of the float weights of the same call sites."""

    program: torch.fx.GraphModule
    fold: FoldReport
    count: QuantizedCount
    activations: list[ActivationQParams]
    calibration_images: int
    float_sites_bytes: int


def _prepared(model: nn.Module, example: Tensor) -> tuple[torch.fx.GraphModule, FoldReport, int]:
    """``model`` folded (every site its own weight), exported with a dynamic batch and prepared with the
    x86 quantizer's default static config; with the fold report and the folded weights' size."""
    quantize_pt2e = require_torchao()
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    folded, fold = fold_for_inference(model.eval(), unshare=True)
    float_sites_bytes = checkpoint_bytes(folded)
    batch = {0: torch.export.Dim("batch", min=1)}
    exported = torch.export.export(folded, (example,), dynamic_shapes=(batch,)).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    return quantize_pt2e.prepare_pt2e(exported, quantizer), fold, float_sites_bytes


def _activation_observers(prepared: torch.fx.GraphModule) -> list[tuple[torch.fx.Node, nn.Module]]:
    """The observers of activations (per-tensor), in graph order; weight observers are per-channel."""
    from torchao.quantization.pt2e.observer import ObserverBase

    found = []
    for node in prepared.graph.nodes:
        if node.op == "call_module":
            module = prepared.get_submodule(str(node.target))
            if isinstance(module, ObserverBase) and not str(module.qscheme).startswith("torch.per_channel"):
                found.append((node, module))
    return found


@contextmanager
def _no_qat_conv_bn_search(quantize_pt2e: Any, prepared: torch.fx.GraphModule) -> Iterator[None]:
    """Skip ``convert_pt2e``'s search for QAT conv–BN patterns, which exports 96 pattern graphs (29 s of a
    30 s convert on 2 cores) whenever any batch norm is left. It folds a BN into the convolution *before*
    it; :mod:`.fold` has folded every such BN already (the ones left follow a residual sum), and a
    static (non-QAT) prepare makes no QAT pattern, so it cannot match — checked here, not assumed."""
    for node in prepared.graph.nodes:
        if node.op == "call_function" and "batch_norm" in str(node.target):
            source = node.args[0]
            if isinstance(source, torch.fx.Node) and "conv" in str(source.target):
                raise QuantizationIncomplete(f"a batch norm still follows a convolution ({source.name}): not folded")
    search = getattr(quantize_pt2e, "_fold_conv_bn_qat", None)
    if search is None:  # another torchao: convert as it is (slower, same result)
        yield
        return
    quantize_pt2e._fold_conv_bn_qat = lambda m: m
    try:
        yield
    finally:
        quantize_pt2e._fold_conv_bn_qat = search


def _convert(prepared: torch.fx.GraphModule, fold: FoldReport) -> tuple[torch.fx.GraphModule, QuantizedCount]:
    """``convert_pt2e``, then :class:`QuantizationIncomplete` unless every convolution site is int8."""
    quantize_pt2e = require_torchao()
    with _no_qat_conv_bn_search(quantize_pt2e, prepared):
        converted = quantize_pt2e.convert_pt2e(prepared)
    count = count_quantized_convs(converted.graph)
    if count.quantized != count.convs or count.convs != fold.conv_sites:
        raise QuantizationIncomplete(
            f"{count.quantized} of {count.convs} convolutions quantized ({fold.conv_sites} in the model)"
        )
    return converted, count


def quantize_int8(model: nn.Module, calibration: Iterable[Tensor], example: Tensor) -> Quantized:
    """``model`` (eval) statically quantized after the observers saw ``calibration``. Raises
    :class:`QuantizationIncomplete` where a convolution stayed float, :class:`UsageError` where
    ``calibration`` yields nothing."""
    prepared, fold, float_sites_bytes = _prepared(model, example)
    seen = 0
    with torch.no_grad():  # the observers record each activation's range
        for x in calibration:
            prepared(x)
            seen += len(x)
    if not seen:
        raise UsageError("no calibration images: int8 needs training images of the model's dataset")
    activations = []
    for node, observer in _activation_observers(prepared):
        scale, zero_point = observer.calculate_qparams()
        activations.append(
            ActivationQParams(
                str(node.target),
                node.args[0].name,
                float(scale),
                int(zero_point),
                str(observer.dtype),
                str(observer.qscheme),
                int(observer.quant_min),
                int(observer.quant_max),
            )
        )
    converted, count = _convert(prepared, fold)
    return Quantized(converted, fold, count, activations, seen, float_sites_bytes)


def rebuild_int8(model: nn.Module, activations: dict[str, ActivationQParams], example: Tensor) -> Quantized:
    """The program :func:`quantize_int8` made, from ``model`` and the recorded ``activations`` alone: each
    activation observer becomes a ``FixedQParamsObserver`` of its recorded values (same dtype, scheme and
    range), one forward pass of zeros lets the weight observers see the folded weights, then convert.
    :class:`Int8RecordError` where the prepared graph's observers are not the recorded ones (another
    architecture, or a torch/torchao that prepares another graph)."""
    from torchao.quantization.pt2e.observer import FixedQParamsObserver

    prepared, fold, float_sites_bytes = _prepared(model, example)
    observers = _activation_observers(prepared)
    found = {str(node.target): node.args[0].name for node, _ in observers}
    recorded = {name: q.observes for name, q in activations.items()}
    if found != recorded:
        differ = sorted(set(found.items()) ^ set(recorded.items()))[:3]
        raise Int8RecordError(
            f"the int8 record does not describe this model as torch {torch.__version__} prepares it "
            f"({len(recorded)} recorded activation quantizers, {len(found)} in the graph; first differences: {differ})"
        )
    for node, observer in observers:
        q = activations[str(node.target)]
        if (q.dtype, q.qscheme, q.quant_min, q.quant_max) != (
            str(observer.dtype), str(observer.qscheme), int(observer.quant_min), int(observer.quant_max)
        ):  # fmt: skip
            raise Int8RecordError(f"the int8 record's {q.observer} is not the quantizer's {observer}")
        fixed = FixedQParamsObserver(
            q.scale, q.zero_point, dtype=observer.dtype, qscheme=observer.qscheme,
            quant_min=q.quant_min, quant_max=q.quant_max,
        )  # fmt: skip
        owner, _, leaf = str(node.target).rpartition(".")
        setattr(prepared.get_submodule(owner) if owner else prepared, leaf, fixed)
    with torch.no_grad():
        prepared(torch.zeros_like(example[:1]))
    converted, count = _convert(prepared, fold)
    return Quantized(converted, fold, count, [activations[name] for name in found], 0, float_sites_bytes)


class Int8Model:
    """An int8 program ready to run: compiled with freezing (oneDNN's quantized kernels) unless
    ``compile=False`` (the reference decomposition: slow, for checks only); float32 logits.

    Compiled for each batch size it meets (``dynamic=False``): with a symbolic batch, inductor's
    quantized convolution on a one-channel image (MNIST) assumes an output layout it does not get.
    One-channel inputs go in contiguous (channels_last is the same layout there)."""

    def __init__(self, program: nn.Module, compile: bool = True) -> None:
        self.module: Callable[[Tensor], Tensor] = FrozenCompiled(program, dynamic=False) if compile else program

    def __call__(self, x: Tensor) -> Tensor:
        layout = torch.channels_last if x.shape[1] > 1 else torch.contiguous_format
        with torch.no_grad():
            return self.module(x.contiguous(memory_format=layout)).float()
