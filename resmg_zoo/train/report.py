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
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import ResmgError, UsageError
from ..core.hardware import autocast_context
from ..data.loader import EpochPlan, Materializer
from ..weights.manifest import REPORT_JSON, REPORT_MAX_CLASSES
from .evaluation import top_classes
from .report_folder import ReportFolderError, check_report_folder, write_report_files

ECE_BINS = 15
CONFUSED_PAIRS = 5
GRID = 16  # misclassified images shown
REPORT_FOLDER = "report"  # in a run folder, written by the last epoch


@dataclass
class Predictions:
    """A split's images in the split's order: their probabilities (N×C, float64), labels, top classes (N×min(5, C),
    :func:`~resmg_zoo.train.evaluation.top_classes`, the first the prediction) and cross-entropy losses (float64),
    each from the model's float32 logits as :func:`~resmg_zoo.train.evaluation.evaluate_split` scores them."""

    probs: Tensor
    labels: Tensor
    top: Tensor
    loss: Tensor

    @classmethod
    def of_logits(cls, logits: Tensor, labels: Tensor) -> Predictions:
        return cls(
            logits.softmax(dim=1).double().cpu(),
            labels.cpu(),
            top_classes(logits).cpu(),
            F.cross_entropy(logits, labels, reduction="none").double().cpu(),
        )

    @classmethod
    def concatenated(cls, parts: list[Predictions]) -> Predictions:
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in ("probs", "labels", "top", "loss")))

    @property
    def predicted(self) -> Tensor:
        return self.top[:, 0]


@torch.no_grad()
def predict_split(
    model: Callable[[Tensor], Tensor], data: Materializer, batch_size: int, precision: Optional[str] = None
) -> Predictions:
    """:class:`Predictions` of ``model`` on every image of ``data``'s split, batch by batch as
    :func:`~resmg_zoo.train.evaluation.evaluate_split` runs it (``precision``: the autocast to run ``model`` under,
    training's evaluation; ``None`` where the model applies its own), so both count the same top-1."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    plan = EpochPlan(len(data.split), batch_size, seed=0, shuffle=False, drop_last=False)
    parts = []
    for batch in plan.batches(0):
        x, y = data(batch)
        with autocast_context(precision, data.device) if precision else contextlib.nullcontext():
            parts.append(Predictions.of_logits(model(x).float(), y))
    return Predictions.concatenated(parts)


def expected_calibration_error(predictions: Predictions, bins: int = ECE_BINS) -> tuple[float, list[dict]]:
    """ECE over ``bins`` equal-width confidence bins (the top probability), and each bin's count, accuracy and
    mean confidence."""
    confidence = predictions.probs.max(dim=1).values
    correct = (predictions.predicted == predictions.labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    table, ece = [], 0.0
    for i in range(bins):
        inside = (confidence > edges[i]) & (confidence <= edges[i + 1]) if i else confidence <= edges[1]
        n = int(inside.sum())
        accuracy = float(correct[inside].mean()) if n else 0.0
        mean_confidence = float(confidence[inside].mean()) if n else 0.0
        ece += n / len(correct) * abs(accuracy - mean_confidence)
        table.append(dict(low=float(edges[i]), high=float(edges[i + 1]), count=n, accuracy=accuracy,
                          confidence=mean_confidence))  # fmt: skip
    return ece, table


def build_report(predictions: Predictions, class_names: list[str], title: dict[str, Any]) -> dict[str, Any]:
    """The report's numbers (see the module docstring); ``title``: what was evaluated (model, split, precision)."""
    labels, classes = predictions.labels, predictions.probs.shape[1]
    if classes > REPORT_MAX_CLASSES:
        raise UsageError(
            f"a report covers at most {REPORT_MAX_CLASSES:,} classes (a matrix of classes²), not {classes:,}"
        )
    predicted = predictions.predicted
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    counts = confusion.sum(dim=1)
    ece, bins = expected_calibration_error(predictions)
    off = confusion.clone().fill_diagonal_(0).flatten()
    pairs = [
        dict(true=class_names[int(i) // classes], predicted=class_names[int(i) % classes], count=int(off[i]))
        for i in off.argsort(descending=True, stable=True)[:CONFUSED_PAIRS]
        if int(off[i]) > 0
    ]
    return dict(
        title,
        images=len(labels),
        top1=100.0 * float((predicted == labels).double().mean()),
        top5=100.0 * float((predictions.top == labels[:, None]).any(dim=1).double().mean()),
        loss=float(predictions.loss.mean()),
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
    confidence = predictions.probs.max(dim=1).values
    wrong = (predictions.predicted != predictions.labels).nonzero().flatten()
    return wrong[confidence[wrong].argsort(descending=True, stable=True)][:count].tolist()


def render_report(
    report: dict[str, Any], predictions: Predictions, images: Tensor
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The report with its most confident mistakes added, and its pictures as PNG bytes by file name (none
    without matplotlib, with a note); ``images``: the split's uint8 images (N, C, H, W), for the grid of
    misclassified ones. Drawn in memory: a picture that cannot be drawn leaves no half-written report."""
    wrong = misclassified(predictions)
    report = dict(report, misclassified=[dict(index=i, true=report["classes"][int(predictions.labels[i])],
                  predicted=report["classes"][int(predictions.predicted[i])],
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
    """``report.json`` and the pictures of :func:`render_report` in ``folder`` (:mod:`.report_folder`: a new, empty
    or earlier report's folder, checked as it is opened and written through one descriptor, all or nothing; callers
    check it with :func:`~.report_folder.check_report_folder` before they predict). Returns what was written."""
    report, pictures = render_report(report, predictions, images)
    return write_report_files(folder, {REPORT_JSON: report_json(report), **pictures})


def write_run_report(
    run_dir: Path, model: torch.nn.Module, data: Materializer, classes: list[str], title: dict[str, Any], batch: int
) -> list[Path]:
    """A training run's report of its last epoch on ``data`` (the test split) in ``run_dir/report/``: the model
    as training evaluates it (``title["precision"]``'s autocast, the same ``batch``), so its top-1 is the last
    metrics row's."""
    try:  # the run is saved: a report that cannot be written (a folder of someone's files, too many classes) is a note
        check_report_folder(run_dir / REPORT_FOLDER)
        predictions = predict_split(model, data, batch, title.get("precision"))
        report = build_report(predictions, classes, title)
        return write_report(run_dir / REPORT_FOLDER, report, predictions, data.split.images)
    except ResmgError as err:
        later = (
            f"; `resmg-evaluate --run {run_dir} --report DIR` draws it" if isinstance(err, ReportFolderError) else ""
        )
        print(f"note: no evaluation report: {err}{later}", file=sys.stderr)
        return []
