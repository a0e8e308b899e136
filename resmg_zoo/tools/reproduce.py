"""Re-run a table of the paper at a named budget and print ours beside the paper's.

    python scripts/reproduce.py --table 1 --budget cpu-tiny
    python scripts/reproduce.py --table 2 --budget cpu-short --rows resnet18_sharedA,resnet18_unshared
    python scripts/reproduce.py --table 1 --budget cpu-tiny --report   # print from the finished runs only

Each row is one training run of ``python -m resmg_zoo.train`` in its own folder
``<out>/table<N>-<budget>/<row>``, so the table is resumable row by row: a finished row is read
back, an interrupted one continues with ``--resume``, a missing one starts. The printed Markdown
names the budget, the hardware, the data archive and the training time of every row; it is also
written to ``<out>/table<N>-<budget>/results.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.choices import parse_ints
from ..core.cli import EXIT_NONFINITE
from ..core.counting import param_count
from ..core.errors import UsageError
from ..core.files import read_json_object
from ..core.paper import TABLE_DATASETS, TABLE_KEYS, paper_rows
from ..models.variants import FORM_SYMBOLS
from ..train.run import CONFIG_NAME, Run, RunError

TABLE_TITLES = {
    1: "Table 1: F-ResNet (Algorithm 2) with the 16 forms of A_ℓ and B_{ℓ,i}, CIFAR-10",
    2: "Table 2: MNIST",
    3: "Table 3: CIFAR-10",
    4: "Table 4: CIFAR-100",
}


@dataclass(frozen=True)
class Budget:
    """How much training a row gets: a recipe of :mod:`resmg_zoo.train.recipes` and what changes it.
    Every budget trains in train's ``--precision auto`` (bf16 where it is measured faster on the machine,
    else fp32); each run's ``config.json`` records the precision and why, and the table names it."""

    name: str
    recipe: str
    epochs: Optional[float]  # None: the recipe's own rule
    model_kwargs: tuple[tuple[str, str], ...]
    channels_last: bool
    description: str
    train_args: tuple[str, ...] = ()  # any further ``resmg_zoo.train`` options


BUDGETS: dict[str, Budget] = {
    b.name: b
    for b in (
        Budget("paper", "paper", None, (), False, "the paper's recipe (§5.2) at full width"),
        Budget(
            "cpu-short",
            "short",
            None,
            (),
            True,
            "full width, the `short` recipe (3 epochs MNIST / 15 CIFAR, cosine), channels_last",
        ),
        Budget(
            "cpu-sprint",
            "sprint",
            None,
            (),
            True,
            "full width, the `sprint` recipe (the time-to-accuracy recipe: see `recipes.py`), channels_last",
        ),
        Budget(
            "cpu-tiny",
            "short",
            2,
            (("widths", "16,32,64,128"),),
            True,
            "widths 16-32-64-128 (a quarter of the paper's), 2 epochs of the `short` recipe (cosine, 45,000 "
            "train images), channels_last",
        ),
        Budget(
            "cpu-small",
            "short",
            10,
            (("widths", "16,32,64,128"),),
            True,
            "widths 16-32-64-128 (a quarter of the paper's), 10 epochs of the `short` recipe (cosine, 45,000 "
            "train images), channels_last",
        ),
        Budget(
            "smoke",
            "quick",
            0.1,
            (("widths", "8,8,16,16"),),
            False,
            "a plumbing check: widths 8-8-16-16, a tenth of an epoch, no validation split (for tests, not a result)",
            ("--val-size", "0"),
        ),
    )
}


@dataclass(frozen=True)
class Row:
    """One row of a paper table: a model with its arguments, and the paper's top-1."""

    row_id: str
    model: str
    model_kwargs: tuple[tuple[str, str], ...]
    paper_top1: float
    label: str


def table_rows(table: int) -> list[Row]:
    """The rows of the paper's Table ``table``, in the paper's order."""
    rows = []
    for r in paper_rows(table):
        if table == 1:
            a, b = r["a_form"], r["b_form"]
            label = f"A_ℓ = {FORM_SYMBOLS[a]}, B_ℓ,i = {FORM_SYMBOLS[b]}"
            rows.append(Row(f"{a}-{b}", "fresnet18", (("a_form", a), ("b_form", b)), r["top1"], label))
        else:
            rows.append(Row(r["model"], r["model"], (), r["top1"], f"`{r['model']}`"))
    return rows


def select_rows(table: int, wanted: Optional[str]) -> list[Row]:
    """All rows, or those named in the comma-separated ``wanted`` (an unknown name lists the valid ones)."""
    rows = table_rows(table)
    if not wanted:
        return rows
    by_id = {r.row_id: r for r in rows}
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [n for n in names if n not in by_id]
    if unknown:
        raise UsageError(f"Table {table} has no row {', '.join(map(repr, unknown))}; its rows are {', '.join(by_id)}")
    return [by_id[n] for n in names]


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1"`` → ``(0, 1)``; anything but distinct non-negative integers is a ValueError naming the input."""
    try:
        seeds = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated non-negative integers, got {text!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def row_result(run_dir: Path) -> Optional[dict[str, Any]]:
    """The finished run's last metrics row, or ``None`` while it is missing or unfinished."""
    try:
        return Run.open(run_dir).finished()
    except RunError:
        return None


STATUS_FILE = "reproduce-status.json"


def diverged(run_dir: Path) -> bool:
    """Whether this row's training stopped on a non-finite loss (recorded, and not retried)."""
    path = run_dir / STATUS_FILE
    return path.exists() and read_json_object(path, "the row's status").get("status") == "diverged"


def run_dir_of(table_dir: Path, row: Row, seed: int) -> Path:
    """The run folder of one row and seed: ``<row>`` for seed 0, ``<row>-seed<N>`` for the others."""
    return table_dir / (row.row_id if seed == 0 else f"{row.row_id}-seed{seed}")


SEED_FOLDER = re.compile(r"-seed(\d+)$")


def seeds_on_disk(table_dir: Path, row: Row) -> set[int]:
    """The seeds of ``row`` that have a finished run in ``table_dir``."""
    found = set()
    for path in table_dir.glob(f"{row.row_id}*"):
        rest = path.name[len(row.row_id) :]
        match = SEED_FOLDER.fullmatch(rest)
        if (rest == "" or match) and row_result(path) is not None:
            found.add(int(match.group(1)) if match else 0)
    return found


def train_command(row: Row, budget: Budget, table: int, run_dir: Path, data: Optional[str], seed: int = 0) -> list[str]:
    """The ``resmg_zoo.train`` command of one row (``--resume`` when its folder holds a started run)."""
    cmd = [sys.executable, "-m", "resmg_zoo.train", "--quiet", "--out", str(run_dir)]
    if data:
        cmd += ["--data", data]
    if (run_dir / "checkpoint.json").exists():
        return [*cmd, "--resume"]
    cmd += ["--model", row.model, "--dataset", TABLE_DATASETS[table], "--recipe", budget.recipe, "--seed", str(seed)]
    cmd += ["--channels-last"] if budget.channels_last else []  # the precision: train's auto, recorded per run
    if budget.epochs is not None:
        cmd += ["--epochs", f"{budget.epochs:g}"]
    cmd += list(budget.train_args)
    kwargs = dict(budget.model_kwargs) | dict(row.model_kwargs)
    if kwargs:
        cmd += ["--model-kwargs", *(f"{k}={v}" for k, v in kwargs.items())]
    return cmd


def _kwargs(row: Row, budget: Budget) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(budget.model_kwargs) | dict(row.model_kwargs)
    if "widths" in kwargs:
        kwargs["widths"] = parse_ints("widths", kwargs["widths"])
    return kwargs


def _cell(table_dir: Path, row: Row, seeds: list[int]) -> tuple[str, Optional[float], dict[int, dict[str, Any]]]:
    """Ours for one row: the text of the cell, the mean top-1 over its finished seeds, their metrics by seed."""
    wanted = sorted(set(seeds) | seeds_on_disk(table_dir, row))
    finished = {s: row_result(run_dir_of(table_dir, row, s)) for s in wanted}
    done = {s: res for s, res in finished.items() if res is not None}
    if not done:
        run_dir = run_dir_of(table_dir, row, wanted[0])
        started = (run_dir / CONFIG_NAME).exists()
        return ("diverged (non-finite loss)" if diverged(run_dir) else "unfinished" if started else "not run"), None, {}
    mean = statistics.fmean(res["test_top1"] for res in done.values())
    text = f"{mean:.2f}"
    if len(done) > 1:
        text += " (" + ", ".join(f"s{s}: {res['test_top1']:.2f}" for s, res in done.items()) + ")"
    missing = [s for s in wanted if s not in done]
    if missing:
        text += "; unfinished: " + ", ".join(f"s{s}" for s in missing)
    return text, mean, done


def precisions(configs: list[dict[str, Any]]) -> str:
    """The precision the runs computed in (each budget runs train's ``--precision auto``): ``bf16 autocast``,
    ``fp32`` or both with the count of runs of each."""
    names = {"bf16": "bf16 autocast", "fp32": "fp32"}
    counts = Counter(names.get(c.get("precision", "fp32"), c.get("precision")) for c in configs)
    if len(counts) <= 1:
        return next(iter(counts), "precision auto (bf16 where measured faster, else fp32)")
    return " / ".join(f"{name} ({n} runs)" for name, n in counts.most_common())


def markdown(table: int, budget: Budget, rows: list[Row], table_dir: Path, seeds: tuple[int, ...] = (0,)) -> str:
    """Ours beside the paper's (the mean over the finished seeds), with budget, hardware, data and training time."""
    cells = {r.row_id: _cell(table_dir, r, list(seeds)) for r in rows}
    configs = [Run.open(table_dir / r.row_id).config for r in rows if (table_dir / r.row_id / CONFIG_NAME).exists()]
    first = configs[0] if configs else {}
    total = sum(res["train_seconds_total"] for _, _, done in cells.values() for res in done.values())
    all_seeds = sorted({seed for _, _, done in cells.values() for seed in done} | {0})
    seed_text = "seed 0"
    if all_seeds != [0]:
        seed_text = f"mean over seeds {', '.join(map(str, all_seeds))} where run (sN: seed N)"
    lines = [
        f"**{TABLE_TITLES[table]}** — budget `{budget.name}`: {budget.description}, "
        f"{precisions(configs)}. "
        f"Ours: {seed_text}, final-epoch test top-1 on {first.get('hardware', 'this machine')}; "
        f"{total / 60:.1f} min of training in all. Data: `{Path(first.get('dataset_source', '?')).name}` "
        f"(sha256 `{str(first.get('dataset_sha256', '?'))[:12]}…`). The paper's column is its own recipe "
        f"(§5.2), not this budget.",
        "",
        "| row | ours top-1 (%) | paper top-1 (%) | ours − paper | params (ours) | epochs | training (min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        text, mean, done = cells[r.row_id]
        # counted with the dataset tag's head and input channels
        params = param_count(f"{r.model}.{TABLE_DATASETS[table]}", **_kwargs(r, budget))
        if mean is None:
            lines.append(f"| {r.label} | {text} | {r.paper_top1:.2f} | — | {params:,} | — | — |")
            continue
        wall = sum(res["train_seconds_total"] for res in done.values()) / 60
        lines.append(
            f"| {r.label} | {text} | {r.paper_top1:.2f} | {mean - r.paper_top1:+.2f} | "
            f"{params:,} | {next(iter(done.values()))['epoch']} | {wall:.1f} |"
        )
    return "\n".join(lines)


def reproduce(
    table: int,
    budget: Budget,
    rows: list[Row],
    out: Path,
    data: Optional[str],
    report: bool,
    seeds: tuple[int, ...] = (0,),
) -> int:
    """Train every unfinished row and seed (unless ``report``), then print and write the table."""
    table_dir = out / f"table{table}-{budget.name}"
    failed = []
    for row, seed in ((row, seed) for row in rows for seed in seeds):
        run_dir = run_dir_of(table_dir, row, seed)
        if report or row_result(run_dir) is not None or diverged(run_dir):
            continue
        cmd = train_command(row, budget, table, run_dir, data, seed)
        print(f"[reproduce] {run_dir.name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        returncode = subprocess.run(cmd, stdout=sys.stderr).returncode  # stdout carries only the table
        if returncode == EXIT_NONFINITE:
            (run_dir / STATUS_FILE).write_text(json.dumps({"status": "diverged", "command": cmd[1:]}) + "\n")
        elif returncode != 0:
            failed.append(run_dir.name)
    text = markdown(table, budget, rows, table_dir, seeds)
    table_dir.mkdir(parents=True, exist_ok=True)
    (table_dir / "results.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    if failed:
        print(f"[reproduce] rows that did not finish: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/reproduce.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="budgets:\n" + "\n".join(f"  {b.name}: {b.description}" for b in BUDGETS.values()),
    )
    parser.add_argument("--table", type=int, required=True, choices=sorted(TABLE_KEYS))
    parser.add_argument("--budget", default="cpu-short", choices=list(BUDGETS))
    parser.add_argument("--rows", default=None, help="comma-separated row ids (default: every row of the table)")
    parser.add_argument("--out", default="runs/reproduce", help="folder of the per-row run folders")
    parser.add_argument("--data", default=None, help="folder holding <dataset>.zip (default $RESMG_ZOO_DATA)")
    parser.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds to train per row (default 0); seed N>0 runs in <row>-seedN; "
        "the table shows the mean over every finished seed",
    )
    parser.add_argument("--report", action="store_true", help="train nothing; print the table from finished rows")
    args = parser.parse_args(argv)
    try:
        rows = select_rows(args.table, args.rows)
        seeds = parse_seeds(args.seeds)
    except UsageError as err:
        parser.error(str(err))
    return reproduce(args.table, BUDGETS[args.budget], rows, Path(args.out), args.data, args.report, seeds)


if __name__ == "__main__":
    sys.exit(main())
