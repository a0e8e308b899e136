"""A run folder's record of training: per-epoch metrics as JSONL and CSV, and the training-curve PNG."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from ..core.atomic import atomic_path, write_text_atomic

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CURVE_PNG = "curve.png"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_JSONL
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite both metric files with ``rows`` (atomic, so a resumed run never sees a torn line)."""
    write_text_atomic(run_dir / METRICS_JSONL, "".join(json.dumps(r) + "\n" for r in rows))
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(run_dir / METRICS_CSV, buffer.getvalue())


def plot_curve(run_dir: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Loss and accuracy per epoch, as ``curve.png`` (skipped, with a note, without matplotlib:
    ``pip install 'resmg_zoo[tools]'``)."""
    try:
        import matplotlib
    except ImportError:
        if not getattr(plot_curve, "noted", False):
            print("note: no curve.png (matplotlib is not installed: pip install 'resmg_zoo[tools]')", file=sys.stderr)
            plot_curve.noted = True  # type: ignore[attr-defined]
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "val"), ("test_loss", "test")):
        if any(key in r for r in rows):
            ax_loss.plot(epochs, [r.get(key) for r in rows], marker="o", label=label)
    for key, label in (("train_top1", "train"), ("val_top1", "val"), ("test_top1", "test")):
        if any(key in r for r in rows):
            ax_acc.plot(epochs, [r.get(key) for r in rows], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(run_dir / CURVE_PNG) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
