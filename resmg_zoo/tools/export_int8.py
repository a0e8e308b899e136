"""``resmg-export --format int8``: the export folder of :mod:`resmg_zoo.inference.int8` for a model, with
its calibration data and the record of what it was made from; part of :mod:`.export`, kept apart so
that the float formats read on their own."""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..core.atomic import make_shareable, replace_folder, write_text_atomic
from ..core.counting import checkpoint_bytes, count_parameters
from ..core.errors import UsageError
from ..data.datasets import load_dataset
from ..inference.int8 import CFG_KEYS, RECORD_NAME, calibration_batches, load_int8, quantize_int8, save_int8
from ..weights.resolve import find_published


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


def calibration_dataset(model: nn.Module, archive: Optional[str], asked: Optional[str], data: Optional[str]) -> Any:
    """The dataset whose training images calibrate int8: ``--calibration-data``, else the run's archive,
    else the published tag's dataset (``$RESMG_ZOO_DATA``)."""
    name = asked or archive or model.pretrained_cfg.get("tag")
    if not name:
        raise UsageError("int8 needs calibration images: give --calibration-data <dataset name or ImageFolder zip>")
    return load_dataset(name, data_dir=data)


def source_weights(name: str, pretrained: bool, checkpoint: Optional[str]) -> dict[str, Any]:
    """What the exported weights are: the published entry (hub id and the sha256 its file was checked
    against) or the checkpoint given."""
    if not pretrained:
        return dict(checkpoint=checkpoint) if checkpoint else dict(random_init=True)
    arch, _, tag = name.partition(".")
    found = find_published(arch, tag or None)
    return dict(hub_id=found.hub_id, sha256=found.entry["sha256"]) if found else dict(pretrained=name)


def export_int8(
    model: nn.Module,
    name: str,
    folder: Path,
    dataset: Any,
    images: int,
    real: Optional[Tensor],
    weights: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Quantize ``model`` (:func:`resmg_zoo.inference.int8.quantize_int8`), write the export folder and
    check the written program against the in-memory one (equal outputs) and the float model."""
    example = real[:2] if real is not None else torch.randn(2, *model.pretrained_cfg["input_size"])
    quantized = quantize_int8(model, calibration_batches(dataset, images), example)
    fold = quantized.fold
    cfg = {k: model.pretrained_cfg[k] for k in CFG_KEYS if model.pretrained_cfg.get(k) is not None}
    record = dict(
        model=name,
        architecture=model.pretrained_cfg.get("architecture", name.split(".")[0]),
        params=count_parameters(model),
        weights=weights or {},
        pretrained_cfg=cfg | {"input_size": list(example.shape[1:]), "num_classes": model.num_classes},
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
        record = save_int8(quantized.program, example, staging, record)
        written, _ = load_int8(staging)
        check = real if real is not None else example
        with torch.no_grad():
            got, expected = written(check), quantized.program(check)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        record["check"] = agreement_with_float(model, check, got, real is not None)
        write_text_atomic(staging / RECORD_NAME, json.dumps(record, indent=2) + "\n")
        replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record
