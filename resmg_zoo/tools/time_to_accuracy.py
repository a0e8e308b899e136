"""Test top-1 against cumulative training seconds, for runs of different recipes side by side.

    python scripts/time_to_accuracy.py runs/cifar-paper runs/cifar-short runs/cifar-sprint \\
        --targets 90,93 --plot docs/time-to-accuracy.png --markdown docs/time-to-accuracy.md

Reads only the run folders (``config.json`` and ``metrics.jsonl``): the per-epoch ``train_seconds_total``
are training seconds (the evaluation after each epoch is not counted). The table gives, per run,
the minutes at the end of the first epoch whose accuracy reached each target (``—`` if none did),
the final accuracy, the EMA copy's and the flip-averaged one where the run logged them, the
paper's Table 3 figure for the model, and the machine. A run still training is shown as far as it
got (``epochs`` says how far). ``--per-epoch`` prints instead one table per run with a row per epoch
(training seconds, cumulative hours, images/s, lr, train and test accuracy, and the EMA and
flip-averaged accuracy where the run logged them), and a line saying after which epoch ``--metric``
first reached each of ``--targets``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from ..core.cli import report_error
from ..core.errors import ResmgError, UsageError
from ..core.paper import paper_result
from ..core.tags import dataset_identity
from ..train.recipes import resolve_recipe
from ..train.run import Run, RunError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/time_to_accuracy.py", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="training run folders")
    p.add_argument("--metric", default="test_top1", help="the accuracy column of metrics.jsonl (e.g. ema_test_top1)")
    p.add_argument("--targets", default="90,93", help="comma-separated top-1 targets (percent)")
    p.add_argument("--plot", default=None, help="write the curves here (PNG)")
    p.add_argument("--markdown", default=None, help="also write the table here")
    p.add_argument("--per-epoch", action="store_true", help="one table per run, a row per epoch, instead")
    return p


def parse_targets(text: str) -> tuple[float, ...]:
    """``"90,93"`` → ``(90.0, 93.0)``; anything but numbers in (0, 100] is a ValueError naming the input."""
    try:
        targets = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--targets must be comma-separated percentages, got {text!r}") from None
    if not all(0 < t <= 100 for t in targets):
        raise UsageError(f"--targets must lie in (0, 100], got {text!r}")
    return targets


def first_epoch_reaching(rows: list[dict[str, Any]], metric: str, target: float) -> Optional[dict[str, Any]]:
    """The first epoch's row whose ``metric`` reached ``target``, or ``None``."""
    return next((r for r in rows if r.get(metric, -1.0) >= target), None)


def seconds_to(rows: list[dict[str, Any]], metric: str, target: float) -> Optional[float]:
    """Training seconds at the end of the first epoch whose ``metric`` reached ``target``, or ``None``."""
    hit = first_epoch_reaching(rows, metric, target)
    return None if hit is None else hit["train_seconds_total"]


def curve(run: Run, metric: str) -> list[tuple[float, float]]:
    """(cumulative training seconds, accuracy) after each epoch that logged ``metric``."""
    return [(r["train_seconds_total"], r[metric]) for r in run.metrics() if metric in r]


def describe(run: Run) -> str:
    """The run's folder name, model and width: what tells its rows apart."""
    widths = run.config.get("model_kwargs", {}).get("widths")
    return f"{run.path.name} (`{run.model_name}`{f', widths {widths}' if widths else ''})"


def finished_epochs(run: Run, metric: Optional[str] = None) -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl`` rows; a RunError when no epoch has finished yet, or when the
    last one did not log ``metric``."""
    rows = run.metrics()
    if not rows:
        raise RunError(f"{run.path} has no finished epoch in metrics.jsonl")
    if metric is not None and metric not in rows[-1]:
        logged = sorted(k for k in rows[-1] if k.endswith("top1"))
        raise RunError(f"{run.path} logs no {metric!r}; its accuracy columns are {logged}")
    return rows


def _minutes(seconds: Optional[float]) -> str:
    return "—" if seconds is None else f"{seconds / 60:.1f}"


def recipe_changes(run: Run) -> str:
    """The named recipe, and every setting the run changed from it (``short, ema_decay=0.999``)."""
    config = run.config
    dataset = dataset_identity(config["dataset"]).name
    named = asdict(resolve_recipe(config["recipe"], dataset, run.model_name, {}))
    changed = [
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in config["recipe_settings"].items()
        if k not in ("epochs", "description") and named.get(k) != v and not isinstance(v, list)
    ]
    return ", ".join([f"`{config['recipe']}`", *changed])


def _percent(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}"


def report(runs: list[Run], metric: str, targets: tuple[float, ...]) -> str:
    """The Markdown table: one row per run."""
    head = ["run", "recipe (and what the run changed)", "epochs", "train min"]
    head += [f"min to {t:g} %" for t in targets]
    head += [metric, "EMA", "flip TTA", "paper (Table 3)", "machine"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        rows = finished_epochs(run, metric)
        last, settings = rows[-1], run.config["recipe_settings"]
        ema = "ema_" + metric.removeprefix("ema_")
        on_cifar10 = dataset_identity(run.config.get("dataset", "")).name == "cifar10"
        paper = paper_result(run.model_name, 3) if on_cifar10 else None
        widths = run.config.get("model_kwargs", {}).get("widths")
        cells = [
            describe(run),
            recipe_changes(run),
            f"{last['epoch']} / {settings['epochs']:g}",
            _minutes(last["train_seconds_total"]),
            *(_minutes(seconds_to(rows, metric, t)) for t in targets),
            f"{last[metric]:.2f}",
            _percent(last.get(ema)),
            _percent(last.get(metric.replace("_top1", "_flip_top1"))),
            f"{paper['top1']:.2f}" + (" (full width)" if widths else "") if paper else "—",
            run.config.get("hardware", "?"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: The per-epoch table's optional columns: shown when some epoch of the run logged them.
_OPTIONAL_EPOCH_COLUMNS = {"ema_test_top1": "EMA test top-1", "test_flip_top1": "flip TTA test top-1"}


def first_reached(rows: list[dict[str, Any]], metric: str, targets: tuple[float, ...]) -> str:
    """One sentence: after which epoch (and training hours) ``metric`` first reached each target."""
    parts = []
    for target in targets:
        hit = first_epoch_reaching(rows, metric, target)
        where = "not yet" if hit is None else f"epoch {hit['epoch']} ({hit['train_seconds_total'] / 3600:.2f} h)"
        parts.append(f"{target:g} %: {where}")
    return f"`{metric}` first reached " + "; ".join(parts) + f" (of {len(rows)} finished epochs)."


def epoch_table(run: Run, metric: str = "test_top1", targets: tuple[float, ...] = ()) -> str:
    """One run's Markdown table, a row per finished epoch; a title line names the run.

    With ``targets``, a line under the table says when ``metric`` first reached each of them.
    """
    rows = finished_epochs(run, metric if targets else None)
    optional = [k for k in _OPTIONAL_EPOCH_COLUMNS if any(k in r for r in rows)]
    head = ["epoch", "train s", "cumulative h", "img/s", "lr (end)", "train top-1", "test top-1", "test top-5"]
    head += [_OPTIONAL_EPOCH_COLUMNS[k] for k in optional]
    lines = [f"**{describe(run)}**, recipe {recipe_changes(run)}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))
    for r in rows:
        cells = [
            str(r["epoch"]),
            f"{r['train_seconds']:.0f}",
            f"{r['train_seconds_total'] / 3600:.2f}",
            f"{r['images_per_second']:.1f}",
            f"{r['lr']:.4f}",
            _percent(r.get("train_top1")),
            _percent(r.get("test_top1")),
            _percent(r.get("test_top5")),
            *(_percent(r.get(k)) for k in optional),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if targets:
        lines += ["", first_reached(rows, metric, targets)]
    return "\n".join(lines) + "\n"


def plot(runs: list[Run], metric: str, targets: tuple[float, ...], path: Path) -> None:
    """Accuracy against training hours, one line per run, the targets as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for run in runs:
        points = curve(run, metric)
        ax.plot([s / 3600 for s, _ in points], [a for _, a in points], marker="o", ms=3, label=describe(run))
    for target in targets:
        ax.axhline(target, ls="--", lw=0.8, color="gray")
    ax.set(xlabel="training time (hours, evaluation not counted)", ylabel=f"{metric} (%)", title="time to accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        targets = parse_targets(args.targets)
        runs = [Run.open(path) for path in args.runs]
        if args.per_epoch:
            table = "\n".join(epoch_table(run, args.metric, targets) for run in runs)
        else:
            table = report(runs, args.metric, targets)
    except ResmgError as err:
        return report_error(err)
    print(table, end="")
    if args.markdown:
        Path(args.markdown).write_text(table, encoding="utf-8")
    if args.plot:
        plot(runs, args.metric, targets, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
