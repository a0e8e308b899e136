"""int8 ONNX, the portable route: ONNX Runtime's static quantization in QDQ form.

    float ONNX (``torch.onnx.export``) → ``quant_pre_process`` (shape inference and ORT's graph
    optimisations, which fold BN into the convolutions) → ``quantize_static`` (per-channel int8 weights,
    uint8 activations, ranges from calibration images) → a QDQ model any ONNX runtime can run, and that
    ORT executes with its int8 kernels (VNNI / AMX where the CPU has them).

As with the PT2E route, a convolution that stayed float is the failure that must not pass silently:
:func:`count_qdq_convs` counts the convolutions whose input and weight both come from
``DequantizeLinear``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from torch import Tensor

from .int8 import QuantizationIncomplete


def count_qdq_convs(path: Path) -> tuple[int, int]:
    """(convolutions, convolutions fed by ``DequantizeLinear`` on both input and weight) of an ONNX file."""
    import onnx

    graph = onnx.load(str(path)).graph
    produced = {out: node.op_type for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantized = [n for n in convs if all(produced.get(i) == "DequantizeLinear" for i in n.input[:2])]
    return len(convs), len(quantized)


class _Reader:
    """ORT's ``CalibrationDataReader``: one ``{"image": array}`` feed per calibration batch."""

    def __init__(self, batches: Iterable[Tensor]) -> None:
        self.feeds: Iterator[dict[str, Any]] = ({"image": x.contiguous().numpy()} for x in batches)

    def get_next(self) -> Any:
        return next(self.feeds, None)


def quantize_onnx(float_model: Path, out: Path, calibration: Iterable[Tensor]) -> int:
    """Write the static QDQ int8 model of ``float_model`` to ``out``; returns its convolutions, every one
    of them quantized (:class:`~resmg_zoo.inference.int8.QuantizationIncomplete` otherwise)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(calibration)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_model), str(prepared))
        quantize_static(
            str(prepared),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    convs, quantized = count_qdq_convs(out)
    if quantized != convs or not convs:
        raise QuantizationIncomplete(f"{quantized} of {convs} convolutions quantized by ONNX Runtime")
    return convs
