"""The pictures of an evaluation report (:mod:`.report`), drawn with matplotlib (the ``tools`` extra) into PNG
bytes: per-class accuracy, the confusion matrix (class names on the axes, counts in the cells), the reliability
diagram with its ECE, and a grid of the most confident mistakes. Each title names the model, split and precision.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch import Tensor

from ..core.cli import shown_text

MAX_LABEL = 40  # characters of a class name drawn
MAX_ROWS = 60  # classes drawn one per row; more: the worst ones (per-class) or no names (confusion)


def _label(name: Any) -> str:
    """A name as drawn: :func:`~resmg_zoo.core.cli.shown_text` of at most :data:`MAX_LABEL` characters, ``$`` taken
    literally (not as matplotlib math)."""
    return shown_text(name, MAX_LABEL).replace("$", r"\$")


def _title(report: dict[str, Any], what: str) -> str:
    head = f"{report.get('model', '?')} · {report.get('split', '?')} split · {report.get('precision', '?')}"
    return f"{head.replace('$', chr(92) + '$')}\n{what}"


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")  # labels are bounded (_label): so is the picture
    plt.close(fig)
    return buffer.getvalue()


def per_class(report: dict[str, Any]) -> bytes:
    rows = report["per_class"]
    shown = "per-class accuracy"
    if len(rows) > MAX_ROWS:
        rows = sorted(rows, key=lambda r: r["accuracy"])[:MAX_ROWS]
        shown = f"the {MAX_ROWS} least accurate of {len(report['per_class'])} classes"
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.4))
    names = [_label(r["name"]) for r in rows]
    accuracy = [r["accuracy"] for r in rows]
    low = _axis_start(min(accuracy))
    ax.barh(range(len(rows)), [a - low for a in accuracy], left=low, color="#4C72B0")
    digits = 2 if low else 1  # a zoomed axis shows tenths of a point: so does its text
    for i, r in enumerate(rows):
        ax.text(r["accuracy"] + 0.005 * (100 - low), i, f"{r['accuracy']:.{digits}f} % ({r['correct']}/{r['images']})",
                va="center", fontsize=8)  # fmt: skip
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xlim(low, 100 + 0.25 * (100 - low))
    ax.set_xticks([t for t in ax.get_xticks() if low <= t <= 100])  # no tick past 100 %: the room is for the text
    ax.set_xlabel("top-1 accuracy (%)" + (f", the axis from {low:g} %" if low else ""))
    ax.axvline(report["top1"], color="gray", linestyle="--", linewidth=1)
    ax.set_title(_title(report, f"{shown} (all: {report['top1']:.2f} %)"), fontsize=10)
    return _png(fig)


def _axis_start(lowest: float) -> float:
    """Where the accuracy axis starts: 0, or (all classes high, as on MNIST) a multiple of 5 that leaves the
    weakest class's gap to 100 % visible three times over, so differences of a tenth of a point show."""
    start = 5 * ((lowest - 2 * (100 - lowest)) // 5)
    return max(0.0, float(start)) if start >= 50 else 0.0


def confusion(report: dict[str, Any]) -> bytes:
    matrix, names = report["confusion"], [_label(n) for n in report["classes"]]
    n = len(names)
    side = min(0.6 * n, 14.0)  # inches: a thousand classes still make a picture of bounded size
    fig, ax = plt.subplots(figsize=(side + 2.5, side + 2))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:
        top = max(max(row) for row in matrix) or 1
        for i in range(n):
            for j in range(n):
                color = "white" if matrix[i][j] > top / 2 else "black"
                ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=7, color=color)
    if n <= MAX_ROWS:
        ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_title(report, "confusion matrix (images)"), fontsize=10)
    return _png(fig)


def reliability(report: dict[str, Any]) -> bytes:
    bins = report["calibration_bins"]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6), height_ratios=[3, 1], sharex=True)
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"]
    ax.bar(centres, [b["accuracy"] if b["count"] else 0 for b in bins], width=width * 0.95, color="#4C72B0",
           edgecolor="black", label="accuracy")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    total = sum(b["count"] for b in bins) or 1
    confidence = sum(b["count"] * b["confidence"] for b in bins) / total
    leaning = "under-confident" if confidence < report["top1"] / 100 else "over-confident"
    what = (
        f"reliability diagram, ECE {100 * report['ece']:.2f} % ({len(bins)} bins)\n"
        f"mean confidence {100 * confidence:.2f} % vs top-1 {report['top1']:.2f} %: {leaning} on the whole"
    )
    ax.set_title(_title(report, what), fontsize=10)
    hist.bar(centres, [b["count"] for b in bins], width=width * 0.95, color="#DD8452")
    hist.set_yscale("log")
    hist.set_xlabel("confidence (top probability)")
    hist.set_ylabel("images")
    hist.set_xlim(0, 1)
    return _png(fig)


def misclassified(report: dict[str, Any], images: Tensor) -> bytes:
    """The most confident mistakes (uint8 images, N×C×H×W), each captioned true → predicted (confidence)."""
    shown = report["misclassified"][: len(images)]
    columns = 4
    rows = max(1, -(-len(shown) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(shown):
            continue
        image = images[k].permute(1, 2, 0).numpy()
        ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray" if image.shape[2] == 1 else None)
        m = shown[k]
        ax.set_title(f"{_label(m['true'])} → {_label(m['predicted'])}\n({100 * m['confidence']:.0f} %)", fontsize=8)
    if not shown:
        axes.flat[0].text(0.5, 0.5, "no misclassified image", ha="center", va="center")
    fig.suptitle(_title(report, "most confident mistakes: true → predicted"), fontsize=10)
    return _png(fig)


def draw_all(report: dict[str, Any], wrong_images: Tensor) -> dict[str, bytes]:
    """Every picture of the report, by file name."""
    return {
        "per_class.png": per_class(report),
        "confusion.png": confusion(report),
        "reliability.png": reliability(report),
        "misclassified.png": misclassified(report, wrong_images),
    }
