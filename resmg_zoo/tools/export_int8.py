"""The two int8 writers of ``resmg-export``, side by side: ``--format int8`` (an int8 folder: the float
weights and the record of :mod:`resmg_zoo.inference.int8_record`, rebuilt by our code when loaded) and
``--format onnx-int8`` (ONNX Runtime's QDQ file, for other runtimes; never loaded by our commands). Both
calibrate on the same seeded draw of training images, quantize with a function that refuses a
convolution left in float, and report the agreement with the float model on the same check images.

An int8 folder is written into a staging folder beside ``--out``, rebuilt from what was written (the
record and the weights, exactly as a user's command will load it) and compared with the calibrated
program, and only then swapped in; an existing ``--out`` is replaced only when it is an int8 folder
and ``--replace`` is given (:func:`check_out`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..core.atomic import atomic_path, make_shareable, replace_folder, write_text_atomic
from ..core.counting import check_model_args, checkpoint_bytes, count_parameters
from ..core.errors import IntegrityError, UsageError
from ..core.hashing import read_with_sha256
from ..data.datasets import load_dataset
from ..data.loader import EpochPlan, Materializer
from ..inference.int8 import Int8RebuildMismatch, calibration_batches, quantize_int8
from ..inference.int8_record import CFG_KEYS, FORMAT, OLD_PROGRAM_FILES, QUANTIZER, RECORD_NAME
from ..inference.int8_source import open_int8_folder
from ..inference.onnx_int8 import quantize_onnx
from ..weights.loading import parse_state_dict
from ..weights.manifest import WEIGHTS_NAME

REBUILD_TOLERANCE = 1e-5  # rebuilt and calibrated programs hold the same constants: equal up to rounding


@dataclass(frozen=True)
class WeightsFile:
    """The safetensors file a model was loaded from, the sha256 it was verified against, and what it is
    (``hub_id`` of published weights, or the checkpoint named)."""

    path: Path
    sha256: str
    describe: dict[str, Any]


class OutExists(UsageError):
    """``--out`` names something an export may not replace; the message says what and why."""


def check_out(out: Path, folder: bool, replace: bool, suffix: str) -> None:
    """Refuse an ``--out`` that an export must not overwrite, before anything is computed (and again just
    before an int8 folder is swapped in): a parent that is a file, a symbolic link, and anything that exists
    unless ``--replace`` is given and it is an earlier export of the format — a file named ``*.<suffix>``, or
    an int8 folder holding its two files (or the two files of the old format) and nothing else."""
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutExists(f"--out {out}: {blocker} is a file, not a folder")
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink():
        raise OutExists(f"--out {out} is a symbolic link: give the real path (nothing was written)")
    if not folder:
        if not out.is_file() or not out.name.endswith(f".{suffix}"):
            raise OutExists(f"--out {out} exists and is not a .{suffix} export: nothing was touched; give a new path")
    elif not is_export_folder(out):
        names = sorted(p.name for p in out.iterdir())[:5] if out.is_dir() else ["a file"]
        raise OutExists(
            f"--out {out} exists and is not an int8 export folder (it holds {names}): nothing was touched; "
            "give a new folder"
        )
    if not replace:
        raise OutExists(f"--out {out} holds an earlier export: pass --replace to replace it")


def is_export_folder(folder: Path) -> bool:
    """Whether ``folder`` is an int8 export folder and nothing else: the two regular files of an int8 folder
    (or of the old format), no link, no folder, nothing beside them — all that replacing it deletes."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    names = {p.name for p in entries}
    regular = all(p.is_file() and not p.is_symlink() for p in entries)
    return regular and names in ({RECORD_NAME, WEIGHTS_NAME}, set(OLD_PROGRAM_FILES))


def calibration_dataset(model: nn.Module, archive: Optional[str], asked: Optional[str], data: Optional[str]) -> Any:
    """The dataset whose training images calibrate int8: ``--calibration-data``, else the run's archive,
    else the published tag's dataset (``$RESMG_ZOO_DATA``)."""
    name = asked or archive or model.pretrained_cfg.get("tag")
    if not name:
        raise UsageError("int8 needs calibration images: give --calibration-data <dataset name or ImageFolder zip>")
    return load_dataset(name, data_dir=data)


def agreement_with_float(model: nn.Module, images: Tensor, got: Tensor, real: bool) -> dict[str, Any]:
    """How an int8 model's logits ``got`` on ``images`` compare with the float ``model``'s."""
    with torch.no_grad():
        expected = model(images)
    return dict(
        images=len(images),
        real=real,
        top1_agreement_with_float=float((got.argmax(1) == expected.argmax(1)).float().mean()),
        max_abs_diff_from_float=float((got - expected).abs().max()),
    )


def check_images(model: nn.Module, real: Optional[Tensor]) -> Tensor:
    """What both int8 writers check their output on: the real test images, else 8 seeded random images
    (never zeros: zero quantizes to the zero point whatever the scale, so a wrong scale would pass)."""
    if real is not None:
        return real
    size = (model.conv1.in_channels, *model.pretrained_cfg["input_size"][1:])
    return torch.randn(8, *size, generator=torch.Generator().manual_seed(0))


def dataset_check_images(dataset: Any, count: int) -> Tensor:
    """Up to ``count`` test images of the calibration dataset, spread over its test split and normalised as
    calibration normalises: the int8 program's inputs have the size and statistics it was calibrated on
    (a run on 28-pixel images is exported at 28 pixels, whatever its model's default cfg says)."""
    split = dataset.split("test") if "test" in dataset.splits else dataset.split("train")
    picked = torch.arange(0, len(split), max(1, len(split) // count))[:count]
    data = Materializer(split.subset(picked), dataset.mean, dataset.std, channels_last=True)
    plan = EpochPlan(len(picked), len(picked), seed=0, shuffle=False, drop_last=False)
    return data(next(iter(plan.batches(0))))[0].contiguous()


def _json_cfg(model: nn.Module, dataset: Any, example: Tensor) -> dict[str, Any]:
    """The preprocessing the record keeps (lists, not tuples; no ``None``): the model's cfg, with the size
    and the normalisation of the images it was calibrated on."""
    cfg = {k: model.pretrained_cfg[k] for k in CFG_KEYS if model.pretrained_cfg.get(k) is not None}
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
    stats = {k: [float(v) for v in getattr(dataset, k)] for k in ("mean", "std")}
    return cfg | stats | {"input_size": list(example.shape[1:]), "num_classes": model.num_classes}


def verified_bytes(weights: WeightsFile) -> bytes:
    """The bytes of the file the model was loaded from, if they still have the sha256 it was checked against."""
    data, actual = read_with_sha256(weights.path)
    if actual != weights.sha256:
        raise IntegrityError(
            f"{weights.path} changed while it was exported (sha256 {actual}, loaded as {weights.sha256}): run it again"
        )
    return data


def export_int8(
    model: nn.Module,
    name: str,
    model_args: dict[str, Any],
    folder: Path,
    dataset: Any,
    images: int,
    real: Optional[Tensor],
    weights: WeightsFile,
    replace: bool = False,
) -> dict[str, Any]:
    """Quantize ``model`` (loaded from ``weights``), write the int8 folder (those very weight bytes and the
    record), rebuild it from the written files and check it against the calibrated program
    (:class:`Int8RebuildMismatch` otherwise) and the float model; returns the record. What is at ``folder``
    is checked again (:func:`check_out`) just before the swap: it may have changed during the minutes of work."""
    data = verified_bytes(weights)
    with torch.no_grad():  # the model holds exactly the tensors of the bytes written beside the record
        model.load_state_dict(parse_state_dict(data, str(weights.path)), strict=True)
    arch = model.pretrained_cfg.get("architecture", name.split(".")[0])
    check_model_args(arch, model_args)
    check = dataset_check_images(dataset, len(real) if real is not None else 8)
    example = check[:2]
    quantized = quantize_int8(model, calibration_batches(dataset, images), example)
    fold = quantized.fold
    record = dict(
        format=FORMAT,
        name=name,
        model=arch,
        model_args=model_args,
        pretrained_cfg=_json_cfg(model, dataset, example),
        weights=dict(file=WEIGHTS_NAME, sha256=weights.sha256, bytes=len(data), source=weights.describe),
        quantizer=QUANTIZER,
        activations=[q.to_json() for q in quantized.activations],
        params=count_parameters(model),
        calibration=dict(dataset=dataset.name, split="train", images=quantized.calibration_images, seed=0),
        folded_bn=fold.folded_bn,
        conv_sites=fold.conv_sites,
        shared_sites=fold.shared_sites,
        quantized_convs=quantized.count.quantized,
        float_bytes=checkpoint_bytes(model),
        float_sites_bytes=quantized.float_sites_bytes,
        versions=dict(torch=torch.__version__, torchao=version("torchao")),
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))  # swapped in once checked
    make_shareable(staging)
    try:
        (staging / WEIGHTS_NAME).write_bytes(data)
        make_shareable(staging / WEIGHTS_NAME)
        write_text_atomic(staging / RECORD_NAME, json.dumps(record, indent=2) + "\n")
        rebuilt = open_int8_folder(staging, compile=False)
        with torch.no_grad():
            got, calibrated = rebuilt.model(check), quantized.program(check)
        diff = float((got - calibrated).abs().max())
        if diff > REBUILD_TOLERANCE or not torch.equal(got.argmax(1), calibrated.argmax(1)):
            raise Int8RebuildMismatch(
                f"the program rebuilt from {RECORD_NAME} differs from the calibrated one by {diff:.3g} "
                f"(tolerance {REBUILD_TOLERANCE}): the record is incomplete for this torch/torchao; nothing was written"
            )
        record["check"] = agreement_with_float(model, check, got, True) | dict(
            rebuilt_max_abs_diff_from_calibrated=diff
        )
        write_text_atomic(staging / RECORD_NAME, json.dumps(record, indent=2) + "\n")
        check_out(folder, True, replace, "int8")
        replace_folder(staging, folder, replaceable=is_export_folder)  # re-checked on what is deleted
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def export_onnx_int8(
    model: nn.Module,
    name: str,
    path: Path,
    dataset: Any,
    images: int,
    real: Optional[Tensor],
    export_onnx: Any,
) -> dict[str, Any]:
    """The float ONNX (``export_onnx``, the float writer) quantized by ONNX Runtime
    (:func:`resmg_zoo.inference.onnx_int8.quantize_onnx`, which refuses a float convolution), checked
    with ONNX Runtime against the float model."""
    import onnxruntime as ort

    check = check_images(model, real)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(path, keep_suffix=True) as written:
        float_onnx = Path(tmp) / "float.onnx"
        export_onnx(model, check[:2], float_onnx)
        convs = quantize_onnx(float_onnx, written, calibration_batches(dataset, images))
        session = ort.InferenceSession(str(written), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"image": check.numpy()})[0])
        _, sha256 = read_with_sha256(written)
        return dict(
            model=name,
            format="onnx-int8",
            file=str(path),
            sha256=sha256,
            bytes=written.stat().st_size,
            float_onnx_bytes=float_onnx.stat().st_size,
            convs=convs,
            quantized_convs=convs,  # quantize_onnx raised otherwise
            calibration=dict(dataset=dataset.name, split="train", images=images, seed=0),
            check=agreement_with_float(model, check, got, real is not None),
        )
