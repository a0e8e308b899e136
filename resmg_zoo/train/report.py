"""An evaluation a person would rather look at: per-class accuracy, the confusion matrix, top-1/top-5, the
expected calibration error with its reliability diagram, the most confused class pairs, and a grid of
misclassified images — as ``report.json`` and PNG pictures (matplotlib, the ``tools`` extra).

The figures are computed here from the predicted probabilities and the true labels, the same softmax of the
same logits that :func:`~resmg_zoo.train.evaluation.evaluate_split` scores, so the report's top-1 is the one
``resmg-evaluate`` prints. ECE (Guo et al., 2017): the test images binned by their top probability into 15
equal-width bins, ``Σ_b |B_b|/N · |accuracy(B_b) − confidence(B_b)|``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from ..core.atomic import atomic_path
from ..core.errors import UsageError
from ..core.hardware import autocast_context
from ..data.loader import EpochPlan, Materializer
from ..weights.manifest import REPORT_JSON

ECE_BINS = 15
CONFUSED_PAIRS = 5
GRID = 16  # misclassified images shown
MAX_CLASSES = 1000
REPORT_FOLDER = "report"  # in a run folder, written by the last epoch
PICTURES = ("per_class.png", "confusion.png", "reliability.png", "misclassified.png")


@dataclass
class Predictions:
    """The probabilities of a split's images (N×C, float64) and their labels, in the split's order."""

    probs: Tensor
    labels: Tensor


@torch.no_grad()
def predict_split(
    model: Callable[[Tensor], Tensor], data: Materializer, batch_size: int, precision: Optional[str] = None
) -> Predictions:
    """The softmax of ``model``'s float32 logits on every image of ``data``'s split, in the split's order.
    ``precision``: the autocast to run ``model`` under (training's evaluation; ``None`` where the model applies
    its own), as :func:`~resmg_zoo.train.evaluation.evaluate_split` runs it, so both see the same logits."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    plan = EpochPlan(len(data.split), batch_size, seed=0, shuffle=False, drop_last=False)
    probs, labels = [], []
    for batch in plan.batches(0):
        x, y = data(batch)
        with autocast_context(precision, data.device) if precision else contextlib.nullcontext():
            logits = model(x).float()
        probs.append(logits.softmax(dim=1).double().cpu())
        labels.append(y.cpu())
    return Predictions(torch.cat(probs), torch.cat(labels))


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> tuple[float, list[dict]]:
    """ECE over ``bins`` equal-width confidence bins, and each bin's count, accuracy and mean confidence."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    table, ece = [], 0.0
    for i in range(bins):
        inside = (confidence > edges[i]) & (confidence <= edges[i + 1]) if i else confidence <= edges[1]
        n = int(inside.sum())
        accuracy = float(correct[inside].mean()) if n else 0.0
        mean_confidence = float(confidence[inside].mean()) if n else 0.0
        ece += n / len(labels) * abs(accuracy - mean_confidence)
        table.append(dict(low=float(edges[i]), high=float(edges[i + 1]), count=n, accuracy=accuracy,
                          confidence=mean_confidence))  # fmt: skip
    return ece, table


def build_report(predictions: Predictions, class_names: list[str], title: dict[str, Any]) -> dict[str, Any]:
    """The report's numbers (see the module docstring); ``title``: what was evaluated (model, split, precision)."""
    probs, labels = predictions.probs, predictions.labels
    classes = probs.shape[1]
    if classes > MAX_CLASSES:
        raise UsageError(f"a report covers at most {MAX_CLASSES:,} classes (a matrix of classes²), not {classes:,}")
    predicted = probs.argmax(dim=1)
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    top5 = probs.topk(min(5, classes), dim=1).indices
    counts = confusion.sum(dim=1)
    ece, bins = expected_calibration_error(probs, labels)
    off = confusion.clone().fill_diagonal_(0)
    pairs = [
        dict(true=class_names[int(i) // classes], predicted=class_names[int(i) % classes], count=int(off.flatten()[i]))
        for i in off.flatten().argsort(descending=True)[:CONFUSED_PAIRS]
        if int(off.flatten()[i]) > 0
    ]
    return dict(
        title,
        images=len(labels),
        top1=100.0 * float((predicted == labels).double().mean()),
        top5=100.0 * float((top5 == labels[:, None]).any(dim=1).double().mean()),
        loss=float(-probs[torch.arange(len(labels)), labels].clamp_min(1e-300).log().mean()),
        ece=ece,
        classes=class_names,
        per_class=[_class_row(n, int(counts[c]), int(confusion[c, c])) for c, n in enumerate(class_names)],
        confusion=confusion.tolist(),
        most_confused=pairs,
        calibration_bins=bins,
    )


def _class_row(name: str, images: int, correct: int) -> dict[str, Any]:
    return dict(name=name, images=images, correct=correct, accuracy=100.0 * correct / max(1, images))


def misclassified(predictions: Predictions, count: int = GRID) -> list[int]:
    """The indices of the ``count`` most confident mistakes, most confident first."""
    confidence, predicted = predictions.probs.max(dim=1)
    wrong = (predicted != predictions.labels).nonzero().flatten()
    return wrong[confidence[wrong].argsort(descending=True)][:count].tolist()


class ReportFolderError(UsageError):
    """``--report DIR`` names something a report may not write into; nothing was written."""


def check_report_folder(folder: Path) -> None:
    """A report writes only into a new folder, an empty one, or one holding an earlier report's files (regular
    files, replaced): never over a user's files, through a link, or onto a file."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ReportFolderError(f"--report {folder} is a link or a file, not a folder")
    if folder.is_dir():
        ours = {REPORT_JSON, *PICTURES}
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in ours or p.is_symlink() or not p.is_file())
        if foreign:
            raise ReportFolderError(
                f"--report {folder} holds files a report does not write ({foreign[:5]}): give a new or empty folder"
            )


def render_report(
    report: dict[str, Any], predictions: Predictions, images: Tensor
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The report with its most confident mistakes added, and its pictures as PNG bytes by file name (none
    without matplotlib, with a note); ``images``: the split's uint8 images (N, C, H, W), for the grid of
    misclassified ones. Drawn in memory: a picture that cannot be drawn leaves no half-written report."""
    wrong = misclassified(predictions)
    report = dict(report, misclassified=[dict(index=i, true=report["classes"][int(predictions.labels[i])],
                  predicted=report["classes"][int(predictions.probs[i].argmax())],
                  confidence=float(predictions.probs[i].max())) for i in wrong])  # fmt: skip
    try:
        from .report_pictures import draw_all
    except ImportError:
        print("note: no report pictures (matplotlib is not installed: pip install 'resmg_zoo[tools]')", file=sys.stderr)
        return report, {}
    return report, draw_all(report, images[wrong] if wrong else images[:0])


def report_json(report: dict[str, Any]) -> bytes:
    """``report.json``'s bytes."""
    return (json.dumps(report, indent=2) + "\n").encode()


def write_report(folder: Path, report: dict[str, Any], predictions: Predictions, images: Tensor) -> list[Path]:
    """``report.json`` and the pictures of :func:`render_report` in ``folder`` (checked first:
    :func:`check_report_folder`). Returns what was written."""
    check_report_folder(folder)
    report, pictures = render_report(report, predictions, images)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in {REPORT_JSON: report_json(report), **pictures}.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(data)
        written.append(folder / name)
    return written


def write_run_report(
    run_dir: Path, model: torch.nn.Module, data: Materializer, classes: list[str], title: dict[str, Any], batch: int
) -> list[Path]:
    """A training run's report of its last epoch on ``data`` (the test split) in ``run_dir/report/``: the model
    as training evaluates it (``title["precision"]``'s autocast, the same ``batch``), so its top-1 is the last
    metrics row's."""
    try:
        check_report_folder(run_dir / REPORT_FOLDER)  # the run is saved: a report that cannot be written is a note
    except ReportFolderError as err:
        print(
            f"note: no evaluation report: {err}; `resmg-evaluate --run {run_dir} --report DIR` draws it",
            file=sys.stderr,
        )
        return []
    predictions = predict_split(model, data, batch, title.get("precision"))
    report = build_report(predictions, classes, title)
    return write_report(run_dir / REPORT_FOLDER, report, predictions, data.split.images)
