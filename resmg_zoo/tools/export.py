"""Export a model as ``torch.export`` (``.pt2``), ONNX or — legacy — TorchScript, and check the file
against eager PyTorch.

    resmg-export --model preact_resnet18_sharedA.mnist --pretrained --format pt2
    resmg-export --model preact_resnet18_sharedA.mnist --pretrained --format onnx
    resmg-export --model fresnet18 --checkpoint runs/reproduce/table1-cpu-tiny/linear-both --format torchscript
    resmg-export --model preact_resnet18_sharedA.cifar10 --pretrained --format int8  # a folder: weights + int8.json

``pt2`` is what torch recommends now: ``torch.export.save`` of the exported program, loaded with
``torch.export.load(path).module()``. TorchScript is kept for users who still need it; torch 2.14
deprecates it, and its FutureWarnings are silenced here, where the choice is deliberate.

The exported file takes a dynamic batch. It is checked on random inputs at two batch sizes and on
real test images of the model's dataset (the tag's ``<name>.zip`` in ``$RESMG_ZOO_DATA``, or the
run's archive); a difference beyond the tolerance is an error (exit 1). The shared operators stay
shared: a level's one ``A_ℓ`` is one tensor in the file, read by every convolution that applies it
(the report counts convolutions and distinct convolution weights).

``int8`` writes an int8 folder (:mod:`.export_int8`): the float weights and ``int8.json``, the record of
the activation scales that calibration on ``--calibration-images`` training images of the model's dataset
found (torchao's ``X86InductorQuantizer``, every convolution asserted int8); it is rebuilt from the
written files and must answer as the calibrated program did. ``onnx-int8`` is the portable route for other
runtimes: the float ONNX statically quantized by ONNX Runtime (QDQ). An existing ``--out`` is replaced only
with ``--replace`` and only if it is an earlier export of the same format.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import timm
import torch
from timm.data import create_transform, resolve_model_data_config
from torch import Tensor, nn

from ..core.atomic import atomic_path
from ..core.choices import check_choice
from ..core.cli import parse_model_kwargs, report_error
from ..core.counting import count_parameters
from ..core.errors import ResmgError, UsageError
from ..core.tags import dataset_identity
from ..data.datasets import default_data_dir
from ..data.image_files import ImageSource, load_image
from ..models.variants import VARIANTS
from ..train.finetune import resolve_init
from ..train.run import Run
from ..weights.loading import load_state
from ..weights.resolve import resolve_weights
from .export_int8 import WeightsFile, calibration_dataset, check_out, export_int8, export_onnx_int8

INT8_FORMATS = ("int8", "onnx-int8")
FORMATS = ("pt2", "onnx", "torchscript", *INT8_FORMATS)
SUFFIXES = {
    "pt2": "pt2",
    "onnx": "onnx",
    "torchscript": "pt",
    "int8": "int8",
    "onnx-int8": "int8.onnx",
}  # int8: a folder


@dataclass
class ExportReport:
    """What was written and how closely it reproduces eager PyTorch."""

    model: str
    format: str
    file: str
    bytes: int
    params: int
    max_abs_diff_random: float
    max_abs_diff_real: Optional[float]
    real_images: int
    conv_nodes: Optional[int] = None
    conv_weights: Optional[int] = None


def load_model_to_export(
    name: str, pretrained: bool, checkpoint: Optional[str], model_kwargs: dict[str, Any], need_file: bool = False
) -> tuple[nn.Module, Optional[str], dict[str, Any], Optional[WeightsFile]]:
    """The eval-mode model, the archive its real check images come from (``None``: the tag's), the
    arguments it was built with, and (``need_file``, or a checkpoint) the file its weights were loaded from
    (``None``: random weights).

    ``checkpoint``: a run folder (its model rebuilt from its config, its last checkpoint), a
    published folder (its ``config.json``'s ``model_args``) or a safetensors file (``--model-kwargs``).
    """
    if pretrained and checkpoint:
        raise UsageError("give --pretrained or --checkpoint, not both")
    arch, _, tag = name.partition(".")
    check_choice("--model", arch, VARIANTS)
    if not checkpoint:
        model = timm.create_model(name, pretrained=pretrained, **model_kwargs).eval()
        args = dict(model_kwargs, num_classes=model.num_classes, in_chans=model.conv1.in_channels)
        if not (pretrained and need_file):
            return model, None, args, None
        resolved = resolve_weights(arch, tag or model.pretrained_cfg.get("tag"))
        described = dict(hub_id=resolved.hub_id, sha256=resolved.sha256)
        args = dict(resolved.published.entry["model_args"]) | model_kwargs
        return model, None, args, WeightsFile(resolved.path, resolved.sha256, described)
    init = resolve_init(arch, checkpoint, False, "", flag="--checkpoint")
    if init.record["kind"] == "run":
        run = Run.open(checkpoint)
        model = run.load_model(**model_kwargs)
        args = {**run.model_args, **model_kwargs, "num_classes": model.num_classes, "in_chans": model.conv1.in_channels}
        weights = WeightsFile(init.weights, init.sha256, dict(checkpoint=str(checkpoint)))
        return model, run.config.get("dataset_source"), args, weights
    args = {k: v for k, v in (init.model_args | model_kwargs).items() if v is not None}
    model = timm.create_model(name, **args)
    load_state(model, init.state, f"--checkpoint {checkpoint} ({name}, {args})")  # the tensors of the bytes hashed
    args |= dict(num_classes=model.num_classes, in_chans=model.conv1.in_channels)
    return model.eval(), None, args, WeightsFile(init.weights, init.sha256, dict(checkpoint=str(checkpoint)))


def real_inputs(model: nn.Module, archive: Optional[str], count: int = 8) -> tuple[Optional[Tensor], str]:
    """Up to ``count`` real test images of the model's dataset, spread over the test split, preprocessed by
    timm's own pipeline for the model (``resolve_model_data_config`` + ``create_transform``, as
    ``resmg-classify`` does), or ``None`` and why not. The dataset is ``archive`` (a run's), else the model's
    tag, found as the dataset registry finds it (``$RESMG_ZOO_DATA/<tag>.zip``)."""
    name = archive or model.pretrained_cfg.get("tag")
    if not name:
        return None, "the model names no dataset (no tag) and no archive was given"
    identity = dataset_identity(name)
    folder = default_data_dir()
    path = Path(identity.path) if identity.path else (folder / f"{identity.name}.zip" if folder else None)
    if path is None or not path.is_file():
        return None, f"no archive of real images found ({path or 'set RESMG_ZOO_DATA'})"
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith("test/") and not n.endswith("/"))
    picked = names[:: max(1, len(names) // count)][:count]
    config = resolve_model_data_config(model)
    transform, mode = create_transform(**config), "L" if config["input_size"][0] == 1 else "RGB"
    archives: dict[str, zipfile.ZipFile] = {}
    try:
        images = [transform(load_image(ImageSource(str(path), n), mode, archives)) for n in picked]
    finally:
        for opened in archives.values():
            opened.close()
    return (torch.stack(images), str(path)) if images else (None, f"{path} has no test images")


def export_pt2(model: nn.Module, example: Tensor, path: Path) -> Callable[[Tensor], Tensor]:
    """``torch.export.export`` with a dynamic batch (input checks included) → ``torch.export.save`` to
    ``path``; returns the program reloaded with ``torch.export.load``."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    return lambda x: loaded(x)


def export_torchscript(model: nn.Module, example: Tensor, path: Path) -> Callable[[Tensor], Tensor]:
    """Legacy: ``torch.jit.script`` (input checks included) → ``path``; returns the reloaded module."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        torch.jit.save(torch.jit.script(model), str(path))
        loaded = torch.jit.load(str(path))
    return lambda x: loaded(x)


def export_onnx(model: nn.Module, example: Tensor, path: Path) -> Callable[[Tensor], Tensor]:
    """``torch.onnx.export`` (dynamo) with a dynamic batch → ``path``; returns an onnxruntime runner."""
    import onnxruntime as ort

    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        external_data=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


EXPORTERS = {"pt2": export_pt2, "onnx": export_onnx, "torchscript": export_torchscript}


def onnx_conv_sharing(path: Path) -> tuple[int, int]:
    """Convolution nodes and distinct convolution weights in an ONNX file."""
    import onnx

    graph = onnx.load(str(path)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    return len(convs), len({n.input[1] for n in convs})


class ExportMismatch(ResmgError):
    """The written file does not compute what the model does (exit 1); nothing is left at ``--out``."""


def _check_close(got: Tensor, expected: Tensor, rtol: float, atol: float, what: str) -> None:
    try:
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
    except AssertionError as err:
        raise ExportMismatch(f"the exported file does not match eager PyTorch on {what}: {err}") from None


def export(
    model: nn.Module, name: str, fmt: str, path: Path, real: Optional[Tensor], rtol: float = 1e-4, atol: float = 1e-4
) -> ExportReport:
    """Write ``model`` as ``fmt`` to ``path`` and check it against eager PyTorch (raises on a mismatch)."""
    input_size = tuple(model.pretrained_cfg["input_size"])
    input_size = (model.conv1.in_channels, *input_size[1:])
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, *input_size, generator=generator)
    # written aside, renamed onto path only once checked
    with atomic_path(path, keep_suffix=True) as written, torch.no_grad():
        run = EXPORTERS[fmt](model, example, written)
        diffs = []
        for batch in (1, 5):  # not the example's batch size: the batch dimension is dynamic
            x = torch.randn(batch, *input_size, generator=generator)
            expected, got = model(x), run(x)
            _check_close(got, expected, rtol, atol, f"random inputs of batch {batch}")
            diffs.append((got - expected).abs().max().item())
        real_diff = None
        if real is not None:
            expected, got = model(real), run(real)
            _check_close(got, expected, rtol, atol, "real images")
            if not torch.equal(got.argmax(1), expected.argmax(1)):
                raise ExportMismatch("the exported model predicts other classes than eager PyTorch on real images")
            real_diff = (got - expected).abs().max().item()
        report = ExportReport(
            name,
            fmt,
            str(path),
            written.stat().st_size,
            count_parameters(model),
            max(diffs),
            real_diff,
            0 if real is None else len(real),
        )
        if fmt == "onnx":
            report.conv_nodes, report.conv_weights = onnx_conv_sharing(written)
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/export.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="registered name, optionally with a tag: NAME[.TAG]")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--pretrained", action="store_true", help="the published weights of the tag")
    source.add_argument("--checkpoint", help="a run folder, a published folder or a .safetensors file")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", help="file to write (default exports/<model>.<pt|onnx>)")
    parser.add_argument("--model-kwargs", nargs="*", default=None, metavar="KEY=VALUE")
    parser.add_argument("--real-images", type=int, default=8, help="real test images in the check (0: none)")
    parser.add_argument(
        "--calibration-data", help="int8: dataset name or ImageFolder zip to calibrate on (default: the model's)"
    )
    parser.add_argument("--calibration-images", type=int, default=512, help="int8: training images (default 512)")
    parser.add_argument("--data", default=None, help="folder with <dataset>.zip (default $RESMG_ZOO_DATA)")
    parser.add_argument("--replace", action="store_true", help="replace an earlier export of the format at --out")
    args = parser.parse_args(argv)
    out = Path(args.out or f"exports/{args.model}.{SUFFIXES[args.format]}").expanduser()
    try:
        check_out(out, args.format == "int8", args.replace, SUFFIXES[args.format])
        int8 = args.format in INT8_FORMATS
        if int8 and args.calibration_images < 1:
            raise UsageError(f"--calibration-images must be at least 1, got {args.calibration_images}")
        if args.format == "int8" and not (args.pretrained or args.checkpoint):
            raise UsageError("--format int8 quantizes trained weights: give --pretrained or --checkpoint")
        kwargs = parse_model_kwargs(args.model_kwargs)
        if args.format == "int8" and ((args.pretrained and kwargs) or {"num_classes", "in_chans"} & set(kwargs)):
            raise UsageError("--format int8 quantizes the weights as they are: no --model-kwargs changing them")
        model, archive, model_args, weights = load_model_to_export(
            args.model, args.pretrained, args.checkpoint, kwargs, need_file=args.format == "int8"
        )
        if int8:  # before the check images: no calibration data is an error, not a warning
            dataset = calibration_dataset(model, archive, args.calibration_data, args.data)
        real, where = real_inputs(model, archive, args.real_images) if args.real_images else (None, "not asked")
        if real is None:
            print(f"warning: real-image check skipped: {where}", file=sys.stderr)
        if args.format == "int8":
            assert weights is not None  # --pretrained or --checkpoint, checked above
            record = export_int8(
                model, args.model, model_args, out, dataset, args.calibration_images, real, weights, args.replace
            )
            print(json.dumps({k: v for k, v in record.items() if k != "activations"}))
            return 0
        if args.format == "onnx-int8":
            images = args.calibration_images
            print(json.dumps(export_onnx_int8(model, args.model, out, dataset, images, real, export_onnx)))
            return 0
        report = export(model, args.model, args.format, out, real)
    except ResmgError as err:
        return report_error(err)
    print(json.dumps(asdict(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
