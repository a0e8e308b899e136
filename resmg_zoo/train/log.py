"""A run folder's record of training: per-epoch metrics as JSONL and CSV, a per-step log, and the curve PNG."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..core.atomic import atomic_path, write_text_atomic
from ..core.files import UnreadableFileError, finite_number, parse_json, read_regular
from ..weights.manifest import CURVE_PNG

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
STEPS_JSONL = "steps.jsonl"
MAX_JSONL_BYTES = 1 << 30  # a row per step of a long run is tens of MB; a log is never a GiB


def _read_jsonl(path: Path, key: str, torn_tail: bool = False) -> list[dict[str, Any]]:
    """The rows of the JSON-lines log at ``path`` (none where there is no file): each line a JSON object
    with a number under ``key``, read by :func:`~resmg_zoo.core.files.read_regular` and parsed by
    :func:`~resmg_zoo.core.files.parse_json` (an :class:`~resmg_zoo.core.files.UnreadableFileError`
    naming the file and line otherwise). ``torn_tail``: a last line without its newline (an append
    killed midway) is not a row."""
    if not path.exists() and not path.is_symlink():
        return []
    data = read_regular(path, MAX_JSONL_BYTES, "log")
    if torn_tail:
        data = data[: data.rfind(b"\n") + 1]
    rows = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        row = parse_json(line, f"log {path}, line {number}")
        value = row.get(key) if isinstance(row, dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UnreadableFileError(f"log {path}, line {number}: not a row with a number {key!r}")
        rows.append(row)
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


# Names a row had before they said what they hold: the cumulative training time was "wall_seconds"
# (it never counted evaluation or waiting), the images trained in the epoch "train_images" (a name the
# run's config uses for the size of the train split).
RENAMED = {"wall_seconds": "train_seconds_total", "train_images": "images_trained"}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch metrics rows (those of an earlier run with today's names, see :data:`RENAMED`).

    Each row: ``epoch``, ``lr``, ``train_loss``, ``train_top1``, ``images_trained`` (this epoch),
    ``train_seconds`` (this epoch's training, no evaluation), ``images_per_second``, each split's
    ``<split>_loss``/``_top1``/``_top5`` (``ema_`` too with an EMA; ``_flip_top1`` after the last
    epoch where the augmentation flips; the splits on evaluated epochs only, see ``--eval-every``) and
    ``train_seconds_total`` (training time of every epoch so far)."""
    rows = _read_jsonl(run_dir / METRICS_JSONL, "epoch")
    return [{RENAMED.get(k, k): v for k, v in row.items()} for row in rows]


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite both metric files with ``rows`` (atomic, so a resumed run never sees a torn line)."""
    _write_jsonl(run_dir / METRICS_JSONL, rows)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(run_dir / METRICS_CSV, buffer.getvalue())


def read_steps(run_dir: Path) -> list[dict[str, Any]]:
    """The per-step log: one row per optimiser step (``step``, fractional ``epoch``, ``train_loss``,
    ``train_top1`` of rank 0's share of the batch, ``lr``). A line torn by a kill during an append
    (no newline yet) is not a row."""
    return _read_jsonl(run_dir / STEPS_JSONL, "step", torn_tail=True)


def write_steps(run_dir: Path, steps: list[dict[str, Any]]) -> None:
    """Rewrite the per-step log with ``steps`` (atomic): once per run, to drop the rows beyond a checkpoint."""
    _write_jsonl(run_dir / STEPS_JSONL, steps)


def append_steps(run_dir: Path, steps: list[dict[str, Any]]) -> None:
    """Append ``steps`` to the per-step log and fsync it: each checkpoint writes only its new rows."""
    with open(run_dir / STEPS_JSONL, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in steps))
        f.flush()
        os.fsync(f.fileno())


def plot_curve(run_dir: Path, rows: list[dict[str, Any]], steps: list[dict[str, Any]], title: str) -> None:
    """Write :func:`curve_png` as ``run_dir/curve.png`` (nothing, with a note, without matplotlib)."""
    data = curve_png(rows, steps, title)
    if data is not None:
        with atomic_path(run_dir / CURVE_PNG) as tmp:
            tmp.write_bytes(data)


def _numbers(row: Any, *keys: str) -> bool:
    """Whether ``row`` has a plottable number under ``epoch`` and each of ``keys`` (a published ``metrics.json`` is
    data: nothing a loss, an accuracy or an epoch can be lies beyond ±10⁹)."""
    values = [row.get(k) for k in ("epoch", *keys)] if isinstance(row, dict) else [None]
    return all(finite_number(v) and abs(v) < 1e9 for v in values)


def curve_png(rows: list[dict[str, Any]], steps: list[dict[str, Any]], title: str) -> bytes | None:
    """Loss and top-1 against epochs as PNG bytes: training per step (a line, readable for a run of one
    epoch too; per epoch where ``steps`` is empty, as for a published folder's ``metrics.json``),
    validation and test per epoch (points). ``None``, with a note, without matplotlib
    (``pip install 'resmg_zoo[tools]'``)."""
    try:
        import matplotlib
    except ImportError:
        if not getattr(curve_png, "noted", False):
            print("note: no curve.png (matplotlib is not installed: pip install 'resmg_zoo[tools]')", file=sys.stderr)
            curve_png.noted = True  # type: ignore[attr-defined]
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((ax_loss, "train_loss", "cross-entropy"), (ax_acc, "train_top1", "top-1 (%)")):
        if steps:
            x = [r["epoch"] for r in steps]
            ax.plot(x, [r[key] for r in steps], lw=0.8, alpha=0.5, color="tab:blue", label="train (per step)")
            window = max(1, len(steps) // 50)  # a running mean over about 2 % of the steps
            smooth = [
                sum(r[key] for r in steps[max(0, i - window + 1) : i + 1]) / min(window, i + 1)
                for i in range(len(steps))
            ]
            ax.plot(x, smooth, lw=1.5, color="tab:blue")
        else:
            trained = [r for r in rows if _numbers(r, key)]
            x, y = [r["epoch"] for r in trained], [r[key] for r in trained]
            ax.plot(x, y, marker=".", color="tab:blue", label="train (epoch mean)")
        epochs = [r["epoch"] for r in rows if _numbers(r)]
        for split, color in (("val", "tab:orange"), ("test", "tab:green")):
            metric = f"{split}_{key.split('_', 1)[1]}"
            evaluated = [r for r in rows if _numbers(r, metric)]  # every epoch, or every --eval-every epochs
            if evaluated:
                x, y = [r["epoch"] for r in evaluated], [r[metric] for r in evaluated]
                ax.plot(x, y, marker="o", color=color, label=f"{split} (evaluated epochs)")
        ax.set(xlabel="epoch", ylabel=label, xlim=(0, 1.03 * max([1, *epochs])))
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
