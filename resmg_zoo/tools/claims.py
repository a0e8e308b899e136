"""A published entry's accuracy, re-measured on the real test split: in full when a mirror is
imported, and on a fixed stratified subset whose exact count of correct images the entry then
records (``check``), so that the claim can be re-checked in seconds rather than minutes.

Both run in fp32 (bf16 rounds differently on every CPU kind; fp32 agrees to the image across the
machines measured so far, and the count is compared with a tolerance of a few images anyway).
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch

from .. import __version__
from ..core.errors import UsageError
from ..core.files import finite_number
from ..core.hardware import describe_hardware
from ..core.tags import TAGS
from ..data.datasets import ImageDataset, ImageSplit, load_dataset
from ..data.loader import Materializer
from ..inference.int8_record import RECORD_NAME
from ..inference.int8_source import open_int8_folder
from ..train.distributed import DistEnv
from ..train.evaluation import evaluate_split
from ..train.log import curve_png
from ..train.report import build_report, predict_split, render_report, report_json
from ..weights.loading import load_weights
from ..weights.manifest import CURVE_PNG, REPORT_JSON, REPORT_PICTURES, WEIGHTS_NAME, entry_architecture

PER_CLASS = 100  # images of each class in the subset: 1,000 for a 10-class test split
TOP1_TOLERANCE = 0.05  # points, on the full test split (5 images of 10,000)
COUNT_TOLERANCE = 2  # images of the subset (borderline images may flip between CPU kinds)
BATCH = 250


def stratified_subset(split: ImageSplit, per_class: int = PER_CLASS) -> ImageSplit:
    """The first ``per_class`` images of every class, in the split's order (deterministic)."""
    picked = [
        (split.labels == label).nonzero().flatten()[:per_class] for label in split.labels.unique(sorted=True).tolist()
    ]
    return split.subset(torch.cat(picked).sort().values)


def published_model(entry: dict[str, Any], weights: Path) -> torch.nn.Module:
    """The entry's architecture with ``weights`` loaded exactly."""
    model = entry_architecture(entry)
    load_weights(model, weights, f"{weights} ({entry['hub_id']})", sha256=entry["sha256"])
    return model.to(memory_format=torch.channels_last).eval()


def count_correct(
    model: Callable[[torch.Tensor], torch.Tensor], dataset: ImageDataset, split: ImageSplit
) -> dict[str, Any]:
    data = Materializer(split, dataset.mean, dataset.std, channels_last=True)
    result = evaluate_split(model, data, BATCH, None, DistEnv())  # fp32: no autocast
    return dict(images=result["count"], correct=round(result["top1"] * result["count"] / 100), top1=result["top1"])


def measure_claim(entry: dict[str, Any], folder: Path, data_dir: Optional[str] = None) -> dict[str, Any]:
    """The ``check`` record of an entry: full test top-1 and the subset's exact count, in fp32."""
    model = published_model(entry, folder / WEIGHTS_NAME)
    dataset = load_dataset(entry["dataset"], data_dir=data_dir, registry_only=True)  # a name, never a path
    full = count_correct(model, dataset, dataset.split("test"))
    subset = count_correct(model, dataset, stratified_subset(dataset.split("test")))
    return dict(
        split="test",
        per_class=PER_CLASS,
        images=subset["images"],
        correct=subset["correct"],
        precision="fp32",
        full_top1=round(full["top1"], 4),
        full_images=full["images"],
    )


def measure_int8(
    entry: dict[str, Any], int8_folder: Path, data_dir: Optional[str] = None
) -> tuple[dict[str, Any], bytes]:
    """The ``int8`` record of an entry and the bytes of the int8 record it pins: ``int8_folder`` (an int8
    folder made from this very entry's weights, its record validated and its weights verified) rebuilt and
    measured on the full test split, with its exact count of correct images on the stratified subset
    (``check``, re-counted by the published-claims test)."""
    opened = open_int8_folder(int8_folder)
    record, data = opened.record, opened.record_bytes
    name = f"{entry['model']}.{entry['tag']}"
    made_for = (record["model"], record["model_args"], record["weights"]["sha256"])
    if made_for != (entry["model"], entry["model_args"], entry["sha256"]):
        raise UsageError(
            f"{int8_folder} was made for {record['model']} {record['model_args']} with weights sha256 "
            f"{record['weights']['sha256']}, not for {name} {entry['model_args']} ({entry['sha256']})"
        )
    dataset = load_dataset(entry["dataset"], data_dir=data_dir, registry_only=True)
    data_split = Materializer(dataset.split("test"), dataset.mean, dataset.std, channels_last=True)
    result = evaluate_split(opened.model, data_split, BATCH, None, DistEnv())
    subset = count_correct(opened.model, dataset, stratified_subset(dataset.split("test")))
    figures = dict(
        file=RECORD_NAME,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        top1=round(result["top1"], 4),
        top5=round(result["top5"], 4),
        images=result["count"],
        check=dict(split="test", per_class=PER_CLASS, images=subset["images"], correct=subset["correct"]),
        quantized_convs=record["quantized_convs"],
        float_sites_bytes=record["float_sites_bytes"],
        calibration_images=record["calibration"]["images"],
        command=f"resmg-export --model {name} --pretrained --format int8",
        versions=record["versions"],
        hardware=describe_hardware(),
        date=time.strftime("%Y-%m-%d"),
    )
    return figures, data


def measure_report(
    entry: dict[str, Any], folder: Path, rows: list[dict[str, Any]], data_dir: Optional[str] = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The ``report`` record of an entry and the files it pins: the published weights in ``folder`` evaluated on
    the full test split in fp32 (:mod:`resmg_zoo.train.report`: per-class accuracy, confusion matrix, ECE, the
    most confident mistakes, as ``report.json`` and pictures) and the training curve ``curve.png`` drawn from
    the folder's ``metrics.json`` (``rows``). Refused where the report's top-1 is more than
    :data:`TOP1_TOLERANCE` points from the entry's full-split fp32 figure (its ``check``, else its top-1)."""
    name = f"{entry['model']}.{entry['tag']}"
    if importlib.util.find_spec("matplotlib") is None:  # before the test split is evaluated for nothing
        raise UsageError("a published report is its pictures too: pip install 'resmg_zoo[tools]' (matplotlib)")
    model = published_model(entry, folder / WEIGHTS_NAME)
    dataset = load_dataset(entry["dataset"], data_dir=data_dir, registry_only=True)
    split = dataset.split("test")
    known = TAGS.get(entry["dataset"])
    if known is not None and list(dataset.classes) != list(known.label_names):
        raise UsageError(f"{dataset.source}: its classes are not {known.name}'s ({', '.join(known.label_names)})")
    predictions = predict_split(model, Materializer(split, dataset.mean, dataset.std, channels_last=True), BATCH)
    title = dict(model=name, dataset=entry["dataset"], split="test", precision="fp32")
    report, pictures = render_report(build_report(predictions, list(dataset.classes), title), predictions, split.images)
    checked = (entry.get("check") or {}).get("full_top1")
    expected = checked if finite_number(checked) else entry["top1"]
    if abs(report["top1"] - expected) > TOP1_TOLERANCE:
        raise UsageError(
            f"{name}: the report's top-1 is {report['top1']:.2f}, the entry's {expected:.2f} (more than "
            f"{TOP1_TOLERANCE} points apart): the folder's weights or the test split are not the entry's"
        )
    curve = curve_png(rows, [], f"{name}: the training run's metrics.json (last epoch {rows[-1]['epoch']})")
    assert curve is not None and set(pictures) == set(REPORT_PICTURES), "matplotlib was found above"
    files = {REPORT_JSON: report_json(report), **pictures, CURVE_PNG: curve}
    figures = dict(
        files={n: hashlib.sha256(data).hexdigest() for n, data in files.items()},
        top1=round(report["top1"], 4),
        top5=round(report["top5"], 4),
        ece=round(report["ece"], 6),
        ece_bins=len(report["calibration_bins"]),
        images=report["images"],
        precision="fp32",
        command=f"resmg-mirror refresh <mirror>/{entry['hub_id']} --report",
        versions=dict(torch=torch.__version__, resmg_zoo=__version__),
        hardware=describe_hardware(),
        date=time.strftime("%Y-%m-%d"),
    )
    return figures, files
