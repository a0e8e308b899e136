"""int8 models through torchao's PT2E flow, saved as an export folder that loads like published weights.

    quantize: fold BN (:mod:`.fold`, one ``nn.Conv2d`` per call site, a shared ``A_ℓ`` copied to each
    site) → ``torch.export`` → ``prepare_pt2e`` with ``X86InductorQuantizer`` (static, per-channel
    symmetric int8 weights, per-tensor uint8 activations) → calibrate on training images →
    ``convert_pt2e``; run: ``torch.compile`` with freezing, which lowers the q/dq pairs into oneDNN's
    quantized convolutions (VNNI / AMX int8 units where the CPU has them).

An export folder holds ``model.pt2`` (``torch.export.save`` of the converted program) and
``export.json``: what was quantized from what, how it was calibrated and checked, the preprocessing
(``pretrained_cfg``), and the file's sha256 and size. :func:`load_int8` hashes the bytes it reads and
refuses a file whose sha256 is not the recorded one (or the one the caller pins).

Why the int8 file is not a quarter of the *float* file of a shared model: the float checkpoint holds
each level's ``A_ℓ`` once, the int8 program one weight per call site (BN folding scales every site's
copy by its own block's BN, and torchao quantizes a convolution only through its own weight). The
quarter holds against the float model with the same sites (``float_sites_bytes`` in the record).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..core.atomic import atomic_path, write_text_atomic
from ..core.counting import checkpoint_bytes
from ..core.errors import IntegrityError, UsageError
from ..core.hashing import read_with_sha256
from ..data.datasets import ImageDataset
from ..data.loader import EpochPlan, Materializer
from .fast_path import FrozenCompiled
from .fold import FoldReport, fold_for_inference

PROGRAM_NAME = "model.pt2"
RECORD_NAME = "export.json"
FORMAT = "resmg-zoo int8 pt2e v1"
CFG_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "label_names", "num_classes")


class Int8IntegrityError(IntegrityError):
    """An int8 program whose bytes are not the ones its record (or the caller) names."""


class QuantizationIncomplete(AssertionError):
    """Quantization left convolutions in float: the known way for int8 to silently do nothing."""


def require_torchao() -> Any:
    """torchao's PT2E module (importing it also registers the ``quantized_decomposed`` ops a saved
    int8 program needs), or a :class:`UsageError` that says how to install it."""
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
    channels_last), in batches: what the observers see. :class:`UsageError` where there are none."""
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


def _batch_dim() -> dict[int, Any]:
    return {0: torch.export.Dim("batch", min=1)}


@dataclass
class Quantized:
    """The converted graph and how it was made: what folding did, the quantized convolutions, the
    calibration images seen, and the safetensors size of the float weights of the same call sites."""

    program: torch.fx.GraphModule
    fold: FoldReport
    count: QuantizedCount
    calibration_images: int
    float_sites_bytes: int


def quantize_int8(model: nn.Module, calibration: Iterable[Tensor], example: Tensor) -> Quantized:
    """``model`` (eval) statically quantized. Raises :class:`QuantizationIncomplete` where a convolution
    stayed float, :class:`UsageError` where ``calibration`` yields nothing."""
    quantize_pt2e = require_torchao()
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    folded, fold = fold_for_inference(model.eval(), unshare=True)
    float_sites_bytes = checkpoint_bytes(folded)
    exported = torch.export.export(folded, (example,), dynamic_shapes=(_batch_dim(),)).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
    seen = 0
    with torch.no_grad():  # the observers record each activation's range
        for x in calibration:
            prepared(x)
            seen += len(x)
    if not seen:
        raise UsageError("no calibration images: int8 needs training images of the model's dataset")
    converted = quantize_pt2e.convert_pt2e(prepared)
    count = count_quantized_convs(converted.graph)
    if count.quantized != count.convs or count.convs != fold.conv_sites:
        raise QuantizationIncomplete(
            f"{count.quantized} of {count.convs} convolutions quantized ({fold.conv_sites} in the model)"
        )
    return Quantized(converted, fold, count, seen, float_sites_bytes)


def drop_unused_tensors(program: torch.fx.GraphModule) -> None:
    """Remove the parameters and buffers no node reads: ``convert_pt2e`` leaves each float weight beside
    the int8 one that replaced it, and ``torch.export`` would save both."""
    used = {str(n.target) for n in program.graph.nodes if n.op == "get_attr"}
    named = [*program.named_parameters(remove_duplicate=False), *program.named_buffers(remove_duplicate=False)]
    for name, _ in named:
        if name not in used:
            owner, _, leaf = name.rpartition(".")
            delattr(program.get_submodule(owner) if owner else program, leaf)
    program.delete_all_unused_submodules()


def save_int8(program: torch.fx.GraphModule, example: Tensor, folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``folder/model.pt2`` (re-exported with a dynamic batch) and ``folder/export.json``
    (``record`` plus the file's sha256 and size); returns the record as written."""
    drop_unused_tensors(program)
    exported = torch.export.export(program, (example,), dynamic_shapes=(_batch_dim(),))
    path = folder / PROGRAM_NAME
    with atomic_path(path, keep_suffix=True) as tmp:
        torch.export.save(exported, str(tmp))
        _, sha256 = read_with_sha256(tmp)
        size = tmp.stat().st_size
    record = dict(format=FORMAT) | record | dict(file=PROGRAM_NAME, sha256=sha256, bytes=size)
    write_text_atomic(folder / RECORD_NAME, json.dumps(record, indent=2) + "\n")
    return record


def _folder_of(path: Path) -> Path:
    """The export folder ``path`` names: the folder itself, or the folder of its ``model.pt2``."""
    return path.parent if path.name == PROGRAM_NAME else path


def _locate(path: Path) -> Path:
    """The export folder of ``path``, or a :class:`UsageError` where it holds no record."""
    folder = _folder_of(path)
    if not (folder / RECORD_NAME).is_file():
        raise UsageError(f"{path} is not an int8 export folder: no {RECORD_NAME} in {folder}")
    return folder


def is_int8_export(path: str | Path) -> bool:
    """Whether ``path`` names an export folder (or the program inside one) written by :func:`save_int8`."""
    return (_folder_of(Path(path)) / RECORD_NAME).is_file()


def read_record(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{folder / RECORD_NAME} cannot be read: {err}") from err
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("file") != PROGRAM_NAME:
        raise UsageError(f"{folder / RECORD_NAME} is not a {FORMAT!r} record")
    return record


def load_int8(path: str | Path, sha256: Optional[str] = None) -> tuple[nn.Module, dict[str, Any]]:
    """The int8 program of an export folder (not compiled) and its record; the file's bytes are hashed as
    read and must match ``sha256`` (default: the record's), else :class:`Int8IntegrityError`."""
    folder = _locate(Path(path))
    record = read_record(folder)
    expected = (sha256 or record.get("sha256") or "").lower()
    try:
        data, actual = read_with_sha256(folder / PROGRAM_NAME)
    except OSError as err:
        raise UsageError(f"{folder / PROGRAM_NAME} cannot be read: {err}") from err
    if actual != expected:
        pinned = "the sha256 asked for" if sha256 else f"the sha256 in {folder / RECORD_NAME}"
        raise Int8IntegrityError(f"{folder / PROGRAM_NAME} has sha256 {actual}, not {pinned} ({expected or 'none'})")
    require_torchao()
    return torch.export.load(io.BytesIO(data)).module(), record


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
